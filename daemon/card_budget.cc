#include "daemon/card_budget.h"

#include "absl/strings/str_cat.h"

namespace qkvshare::daemon {

CardBudget ApplyMinCardBits(double requested_bits, double min_card_bits,
                            absl::string_view model_name) {
  CardBudget out;
  out.bits = requested_bits;
  if (requested_bits < min_card_bits) {
    out.bits = min_card_bits;
    out.raised_reason = absl::StrCat("bits ", requested_bits, " raised to ", min_card_bits,
                                     " (models.", model_name, ".min_card_bits)");
  }
  return out;
}

}  // namespace qkvshare::daemon

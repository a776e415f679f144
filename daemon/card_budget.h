// File: daemon/card_budget.h
// -----------------------------------------------------------------------------
// The bit budget a quantized CacheCard is built with: the hop's requested
// `bits`, raised to the floor of the model that builds the card
// (models.NAME.min_card_bits, docs/configuration.md). Too few bits make a
// small model's continuation diverge from its no-handoff output at once
// (docs/results.md); the floor keeps workflows and request overrides from
// going below what the operator measured as acceptable for that model.
//
// Thread safety: a pure function.
#ifndef QKVSHARE_DAEMON_CARD_BUDGET_H_
#define QKVSHARE_DAEMON_CARD_BUDGET_H_

#include <string>

#include "absl/strings/string_view.h"

namespace qkvshare::daemon {

struct CardBudget {
  double bits = 0;  // average code bits per element the card is built with
  // Why `bits` differs from the request (for the hop's handoff stats and the
  // log), e.g. "bits 2 raised to 4 (models.stories.min_card_bits)"; empty
  // when the request stands.
  std::string raised_reason;
};

// `requested_bits` (2..8 or 16) raised to `min_card_bits` when below it.
CardBudget ApplyMinCardBits(double requested_bits, double min_card_bits,
                            absl::string_view model_name);

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_CARD_BUDGET_H_

#include "daemon/card_budget.h"

#include "gtest/gtest.h"

namespace qkvshare::daemon {
namespace {

TEST(CardBudgetTest, RaisesBelowTheFloorOnly) {
  CardBudget low = ApplyMinCardBits(2, 4, "stories");
  EXPECT_EQ(low.bits, 4);
  EXPECT_EQ(low.raised_reason, "bits 2 raised to 4 (models.stories.min_card_bits)");
  CardBudget frac = ApplyMinCardBits(2.5, 3.25, "m");
  EXPECT_EQ(frac.bits, 3.25);
  EXPECT_EQ(frac.raised_reason, "bits 2.5 raised to 3.25 (models.m.min_card_bits)");
  for (double bits : {4.0, 6.0, 16.0}) {
    CardBudget same = ApplyMinCardBits(bits, 4, "stories");
    EXPECT_EQ(same.bits, bits);
    EXPECT_EQ(same.raised_reason, "");
  }
  // The default floor (2) never changes a valid request.
  EXPECT_EQ(ApplyMinCardBits(2, 2, "stories").raised_reason, "");
}

}  // namespace
}  // namespace qkvshare::daemon

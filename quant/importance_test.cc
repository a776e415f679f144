#include "quant/importance.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace qkvshare::quant {
namespace {

// 2 layers x 1 kv head, 3 rows (queries), 4 context tokens. Row r of a head
// is causally shorter for earlier queries (zeros at the end).
const std::vector<float> kAttention = {
    // layer 0: rows 0..2
    0.5f, 0.5f, 0.0f, 0.0f,  //
    0.2f, 0.2f, 0.6f, 0.0f,  //
    0.1f, 0.1f, 0.4f, 0.4f,  //
    // layer 1
    1.0f, 0.0f, 0.0f, 0.0f,  //
    0.0f, 0.0f, 1.0f, 0.0f,  //
    0.7f, 0.1f, 0.0f, 0.2f,  //
};

AttentionRows Rows() { return {kAttention.data(), 2, 1, 3, 4}; }

void ExpectNear(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t j = 0; j < want.size(); ++j) EXPECT_NEAR(got[j], want[j], 1e-6) << "token " << j;
}

TEST(ImportanceTest, MaxOverHeadsOfTheLastRows) {
  // window 2 = rows 1, 2 (query positions 2, 3): token 3 is visible to row 2
  // only, so its mean is over one row. head 0 -> (0.15, 0.15, 0.5, 0.4);
  // head 1 -> (0.35, 0.05, 0.5, 0.2).
  auto imp = TokenImportance(Rows(), {2, HeadReduction::kMax});
  ASSERT_TRUE(imp.ok()) << imp.status();
  ExpectNear(*imp, {0.35f, 0.15f, 0.5f, 0.4f});
}

TEST(ImportanceTest, MeanOverAllWindowRowsWhenAsked) {
  // The rule before visible_rows_mean: every token divided by w = 2, so
  // token 3 (seen by one of the two rows) gets half its attention.
  ImportanceOptions o{2, HeadReduction::kMax};
  o.visible_rows_mean = false;
  auto imp = TokenImportance(Rows(), o);
  ASSERT_TRUE(imp.ok()) << imp.status();
  ExpectNear(*imp, {0.35f, 0.15f, 0.5f, 0.2f});
}

TEST(ImportanceTest, MeanOverHeadsOfTheLastRow) {
  auto imp = TokenImportance(Rows(), {1, HeadReduction::kMean});
  ASSERT_TRUE(imp.ok()) << imp.status();
  ExpectNear(*imp, {0.4f, 0.1f, 0.2f, 0.3f});
  // A mean over heads of distributions is a distribution.
  double sum = 0;
  for (float v : *imp) sum += v;
  EXPECT_NEAR(sum, 1.0, 1e-6);
}

TEST(ImportanceTest, WindowBeyondRowsUsesAllRows) {
  auto all = TokenImportance(Rows(), {16, HeadReduction::kMean});
  auto three = TokenImportance(Rows(), {3, HeadReduction::kMean});
  ASSERT_TRUE(all.ok() && three.ok());
  EXPECT_EQ(*all, *three);
  // Rows 0..2 are query positions 1..3: tokens 0, 1 are seen by 3 rows,
  // token 2 by 2, token 3 by 1. head 0: (0.8/3, 0.8/3, 1.0/2, 0.4/1);
  // head 1: (1.7/3, 0.1/3, 1.0/2, 0.2/1).
  ExpectNear(*all, {2.5f / 6, 0.9f / 6, 0.5f, 0.3f});
}

TEST(ImportanceTest, DefaultIsMaxOverTheLastFour) {
  const ImportanceOptions defaults;
  EXPECT_EQ(defaults.window, 4);
  EXPECT_EQ(defaults.reduction, HeadReduction::kMax);
  EXPECT_TRUE(defaults.visible_rows_mean);
}

TEST(ImportanceTest, RejectsBadInput) {
  std::vector<float> bad = kAttention;
  bad[3 * 4 + 4 + 2] = -0.1f;  // layer 1, row 1, token 2
  auto neg = TokenImportance({bad.data(), 2, 1, 3, 4}, {});
  EXPECT_EQ(neg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(neg.status().message()).find("layer 1, kv head 0, row 1, token 2"),
            std::string::npos)
      << neg.status();
  bad[3 * 4 + 4 + 2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(TokenImportance({bad.data(), 2, 1, 3, 4}, {}).ok());
  // Outside the window the bad value is not read.
  EXPECT_TRUE(TokenImportance({bad.data(), 2, 1, 3, 4}, {1, HeadReduction::kMax}).ok());
  EXPECT_FALSE(TokenImportance({kAttention.data(), 2, 1, 0, 4}, {}).ok());
  EXPECT_FALSE(TokenImportance({nullptr, 2, 1, 3, 4}, {}).ok());
  EXPECT_FALSE(TokenImportance(Rows(), {0, HeadReduction::kMax}).ok());
}

}  // namespace
}  // namespace qkvshare::quant

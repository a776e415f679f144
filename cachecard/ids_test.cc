#include "cachecard/ids.h"

#include "absl/random/random.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::cachecard {
namespace {

using ::testing::HasSubstr;

TEST(CardIdTest, HexRoundTrip) {
  CardId id;
  for (size_t i = 0; i < id.bytes.size(); ++i) id.bytes[i] = static_cast<uint8_t>(0x10 * i + 1);
  EXPECT_EQ(id.ToHex(), "01112131415161718191a1b1c1d1e1f1");
  absl::StatusOr<CardId> back = CardId::FromHex("01112131415161718191A1B1C1D1E1F1");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, id);
}

TEST(CardIdTest, FromHexRejectsBadInput) {
  absl::StatusOr<CardId> short_id = CardId::FromHex("abcd");
  EXPECT_EQ(short_id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(short_id.status().message(), HasSubstr("expected 32 hex digits, got 4"));
  absl::StatusOr<CardId> bad = CardId::FromHex("0111213141516171819xa1b1c1d1e1f1");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("offset 18"));
}

TEST(CardIdTest, RandomIdsAreNonZeroAndDistinct) {
  absl::BitGen gen;
  CardId a = CardId::Random(gen);
  CardId b = CardId::Random(gen);
  EXPECT_FALSE(a.IsZero());
  EXPECT_NE(a, b);
  EXPECT_TRUE(CardId().IsZero());
}

TEST(FingerprintTest, Hex) {
  ModelFingerprint fp{};
  fp[0] = 0xab;
  fp[31] = 0x01;
  EXPECT_EQ(FingerprintHex(fp), "ab00000000000000000000000000000000000000000000000000000000000001");
}

}  // namespace
}  // namespace qkvshare::cachecard

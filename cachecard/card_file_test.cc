// Export/import of .qkvcard files and the validating streaming copy.
#include "cachecard/card_file.h"

#include <sys/stat.h>

#include <numeric>
#include <string>
#include <vector>

#include "cachecard/build.h"
#include "cachecard/card.h"
#include "cachecard/file_io.h"
#include "cachecard/io.h"
#include "cachecard/testing/synthetic_kv.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::cachecard {
namespace {

using ::testing::HasSubstr;
using testing::MakeSyntheticCache;
using testing::RandomPlan;

CardPtr MakeCard(const agents::KvShape& shape, int64_t tokens, const CardEncoding& enc) {
  auto src = *MakeSyntheticCache(shape, DType::kF32, tokens, 17);
  std::vector<int32_t> ids(tokens);
  std::iota(ids.begin(), ids.end(), 0);
  Provenance prov;
  prov.card_id.bytes.fill(7);
  return *BuildCard(*src, tokens, ids, enc, ModelFingerprint{}, prov);
}

bool SameBytes(absl::Span<const uint8_t> a, absl::Span<const uint8_t> b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end());
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

TEST(CardFileTest, ExportImportRoundTrip) {
  CardPtr card = MakeCard({5, 4, 8}, 40, CardEncoding::Quantized(RandomPlan(40, {3, 4, 16}, 1)));
  const std::string path = ::testing::TempDir() + "/round.qkvcard";
  ASSERT_TRUE(ExportCard(*card, path).ok());
  EXPECT_FALSE(Exists(path + ".partial"));
  absl::StatusOr<CardPtr> back = ImportCard(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(SameBytes((*back)->bytes(), card->bytes()));
  EXPECT_EQ((*back)->id(), card->id());
}

TEST(CardFileTest, StreamingCopyOfSectionsLargerThanAChunk) {
  // One layer, 8 kv heads x 128 dims, 1100 tokens, fp32: 4.5 MB sections,
  // more than CopyCard's 4 MiB chunk, through a sink without a memory window.
  CardPtr card = MakeCard({1, 8, 128}, 1100, CardEncoding::Full());
  ASSERT_GT(card->metadata().segments[0].sections[0].bytes, uint64_t{4} << 20);
  const std::string path = ::testing::TempDir() + "/chunked.qkvcard";
  BufferSource source(card->bytes());
  auto sink = *FileSink::Create(path);
  absl::StatusOr<CardMetadata> m = CopyCard(source, *sink);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->card_bytes, card->bytes().size());
  sink.reset();
  absl::StatusOr<CardPtr> back = ImportCard(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(SameBytes((*back)->bytes(), card->bytes()));
}

TEST(CardFileTest, CopyStopsAtTheFirstBadSectionAndTheFileSinkLeavesNothing) {
  CardPtr card = MakeCard({5, 4, 8}, 12, CardEncoding::Full());
  std::vector<uint8_t> bytes(card->bytes().begin(), card->bytes().end());
  bytes[card->metadata().segments[0].k_section(2).offset] ^= 1;
  const std::string path = ::testing::TempDir() + "/bad.qkvcard";
  {
    BufferSource source(bytes);
    auto sink = *FileSink::Create(path);
    absl::StatusOr<CardMetadata> m = CopyCard(source, *sink);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(m.status().message(), HasSubstr("checksum of segment 0 layer 2 K section"));
    EXPECT_TRUE(Exists(path + ".partial"));
  }
  EXPECT_FALSE(Exists(path + ".partial"));  // removed without Finish()
  EXPECT_FALSE(Exists(path));
}

TEST(CardFileTest, ExportIntoAMissingDirectory) {
  CardPtr card = MakeCard({5, 4, 8}, 3, CardEncoding::Full());
  absl::Status s = ExportCard(*card, ::testing::TempDir() + "/no/such/dir/x.qkvcard");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr("cannot create"));
}

}  // namespace
}  // namespace qkvshare::cachecard

// Hostile card bytes: truncation at every byte, every single-bit flip of a
// whole small card (header, metadata, sections, padding), wrong magic and
// version, another model, empty files. Each must give its specific error,
// leave the destination cache unchanged and never crash.
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "agents/kv_cache.h"
#include "cachecard/build.h"
#include "cachecard/card.h"
#include "cachecard/card_file.h"
#include "cachecard/format.h"
#include "cachecard/inject.h"
#include "cachecard/metadata.h"
#include "cachecard/testing/synthetic_kv.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::cachecard {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;
using testing::MakeSyntheticCache;
using testing::RandomPlan;
using testing::Snapshot;

constexpr agents::KvShape kShape{5, 4, 8};

ModelFingerprint Fingerprint(uint8_t seed) {
  ModelFingerprint fp;
  fp.fill(seed);
  return fp;
}

class HostileCardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto src = *MakeSyntheticCache(kShape, DType::kF32, 6, 3);
    std::vector<int32_t> ids(6);
    std::iota(ids.begin(), ids.end(), 1);
    Provenance prov;
    prov.card_id.bytes.fill(0x42);
    prov.source_agent = "a";
    card_ = *BuildCard(*src, 6, ids, CardEncoding::Quantized(RandomPlan(6, {2, 3, 4, 16}, 4)),
                       Fingerprint(1), prov);
    bytes_.assign(card_->bytes().begin(), card_->bytes().end());
    dst_ = *MakeSyntheticCache(kShape, DType::kF32, 4, 8, 64);
    before_ = Snapshot(*dst_, 4);
  }

  // Parses `bytes` as a card and, if that works without section checks,
  // injects it. Returns the first error; checks the cache is untouched.
  absl::Status Load(const std::vector<uint8_t>& bytes) {
    absl::StatusOr<CardPtr> card = Card::Copy(bytes);
    absl::Status s = card.status();
    if (s.ok()) s = InjectCard(**card, nullptr, Fingerprint(1), dst_.get());
    // The injection path on its own: metadata-only parse, then inject
    // (which re-verifies every section before writing).
    absl::StatusOr<CardPtr> mapped = Card::FromMapping(bytes, nullptr, Card::Verify::kMetadataOnly);
    if (mapped.ok()) {
      absl::Status inject = InjectCard(**mapped, nullptr, Fingerprint(1), dst_.get());
      EXPECT_EQ(inject.code(), s.code()) << inject;
    }
    EXPECT_EQ(dst_->length(), 4);
    EXPECT_EQ(Snapshot(*dst_, 4), before_);
    return s;
  }

  CardPtr card_;
  std::vector<uint8_t> bytes_;
  std::unique_ptr<agents::KvCache> dst_;
  std::vector<uint8_t> before_;
};

TEST_F(HostileCardTest, TheIntactCardLoads) {
  EXPECT_TRUE(Card::Copy(bytes_).ok());
  // Padding exists between sections in this card (so flips there are tested).
  const SegmentInfo& seg = card_->metadata().segments[0];
  EXPECT_NE(seg.sections[0].bytes % kSectionAlignment, 0u);
}

TEST_F(HostileCardTest, TruncatedAtEveryByte) {
  for (size_t n = 0; n < bytes_.size(); ++n) {
    const std::vector<uint8_t> prefix(bytes_.begin(), bytes_.begin() + n);
    absl::Status s = Load(prefix);
    if (n == 0) {
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(s.message(), HasSubstr("empty card"));
    } else {
      EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << n << ": " << s;
      EXPECT_THAT(s.message(), HasSubstr("truncated card")) << n;
    }
  }
}

TEST_F(HostileCardTest, EverySingleBitFlip) {
  const CardMetadata& m = card_->metadata();
  // Which region a byte is in decides the expected error.
  auto section_at = [&](size_t byte) {
    for (const SectionRef& ref : m.segments[0].sections) {
      if (byte >= ref.offset && byte < ref.offset + ref.bytes) return true;
    }
    return false;
  };
  int flips = 0;
  for (size_t byte = 0; byte < bytes_.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<uint8_t> flipped = bytes_;
      flipped[byte] ^= static_cast<uint8_t>(1u << bit);
      absl::Status s = Load(flipped);
      ++flips;
      const std::string where = "byte " + std::to_string(byte) + " bit " + std::to_string(bit);
      if (byte < 4) {
        EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << where;
        EXPECT_THAT(s.message(), HasSubstr("not a CacheCard")) << where;
      } else if (byte < 8) {
        EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented) << where;
        EXPECT_THAT(s.message(), HasSubstr("format version")) << where;
      } else if (byte < 16) {  // card_bytes
        EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << where;
        EXPECT_THAT(s.message(), AnyOf(HasSubstr("truncated card"), HasSubstr("trailing bytes")))
            << where;
      } else if (byte < 24) {  // metadata_bytes
        EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << where;
        EXPECT_THAT(s.message(), AnyOf(HasSubstr("metadata_bytes"), HasSubstr("header checksum")))
            << where;
      } else if (byte < m.metadata_bytes) {
        EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << where;
        EXPECT_THAT(s.message(), HasSubstr("header checksum mismatch")) << where;
      } else if (section_at(byte)) {
        EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << where;
        EXPECT_THAT(s.message(), HasSubstr("checksum of segment 0 layer")) << where;
      } else {
        EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << where;
        EXPECT_THAT(s.message(), HasSubstr("padding byte")) << where;
      }
      if (::testing::Test::HasFailure()) return;  // one report is enough
    }
  }
  EXPECT_EQ(flips, 8 * static_cast<int>(bytes_.size()));
}

TEST_F(HostileCardTest, WrongMagicAndVersion) {
  std::vector<uint8_t> gguf = bytes_;
  std::copy_n("GGUF", 4, gguf.begin());
  absl::Status s = Load(gguf);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("not a CacheCard: magic is 0x47475546"));
  std::vector<uint8_t> future = bytes_;
  future[4] = kCardFormatVersion + 1;
  s = Load(future);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(s.message(), HasSubstr("this build reads version 2"));
}

TEST_F(HostileCardTest, CardOfAnotherModel) {
  absl::Status s = InjectCard(*card_, nullptr, Fingerprint(2), dst_.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("model fingerprint mismatch"));
  EXPECT_EQ(dst_->length(), 4);
  EXPECT_EQ(Snapshot(*dst_, 4), before_);
}

TEST_F(HostileCardTest, FilesEmptyTruncatedAndFlipped) {
  const std::string dir = ::testing::TempDir();
  auto write = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string path = dir + "/" + name;
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return path;
  };
  absl::StatusOr<CardPtr> empty = ImportCard(write("empty.qkvcard", {}));
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty.status().message(), HasSubstr("empty card (0 bytes)"));

  const std::vector<uint8_t> half(bytes_.begin(), bytes_.begin() + bytes_.size() / 2);
  absl::StatusOr<CardPtr> truncated = ImportCard(write("half.qkvcard", half));
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(truncated.status().message(), HasSubstr("truncated card"));

  std::vector<uint8_t> flipped = bytes_;
  const SectionRef& last = card_->metadata().segments[0].sections.back();
  flipped[last.offset + last.bytes - 1] ^= 0x80;
  absl::StatusOr<CardPtr> bad = ImportCard(write("flipped.qkvcard", flipped));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(bad.status().message(), HasSubstr("checksum of segment 0 layer 4 V section"));

  absl::StatusOr<CardPtr> missing = ImportCard(dir + "/does-not-exist.qkvcard");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("does-not-exist.qkvcard"));
}

}  // namespace
}  // namespace qkvshare::cachecard

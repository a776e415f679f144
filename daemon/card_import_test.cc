#include "daemon/card_import.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "agents/kv_cache.h"
#include "cachecard/build.h"
#include "cachecard/card.h"
#include "cachecard/format.h"
#include "cachecard/metadata_codec.h"
#include "cachecard/testing/synthetic_kv.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::daemon {
namespace {

using cachecard::shm::CardHandle;
using cachecard::shm::CardStore;
using ::testing::HasSubstr;

class CardImporterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cachecard::shm::CardStoreOptions options;
    options.instance = absl::StrCat(
        "imp", ::getpid(), "-", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    options.quota_bytes = 1 << 20;
    store_ = *CardStore::Create(options);
    auto cache = *cachecard::testing::MakeSyntheticCache({3, 2, 8}, DType::kF32, 16, 1);
    std::vector<int32_t> ids(16);
    std::iota(ids.begin(), ids.end(), 1);
    card_ = *cachecard::BuildCard(
        *cache, 16, ids, cachecard::CardEncoding::Quantized(cachecard::testing::UniformPlan(16, 4)),
        cachecard::ModelFingerprint{}, cachecard::Provenance());
  }

  // Streams card_ in 256-byte chunks; counts the reads.
  CardStore::ChunkReader Stream(int* reads, size_t* pos) {
    return [this, reads, pos](std::string* out) {
      ++*reads;
      const auto bytes = card_->bytes();
      if (*pos >= bytes.size()) return false;
      const size_t n = std::min<size_t>(256, bytes.size() - *pos);
      out->assign(reinterpret_cast<const char*>(bytes.data() + *pos), n);
      *pos += n;
      return true;
    };
  }

  std::unique_ptr<CardStore> store_;
  cachecard::CardPtr card_;
};

TEST_F(CardImporterTest, StoresAValidCardAndMapsCorruptionToInvalidArgument) {
  CardImporter importer(store_.get(), 1 << 20, 2);
  int reads = 0;
  size_t pos = 0;
  absl::StatusOr<CardHandle> stored = importer.Import(Stream(&reads, &pos));
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ((*stored)->id(), card_->id());
  EXPECT_EQ(importer.in_progress(), 0);

  // A bad section checksum is the client's fault: INVALID_ARGUMENT.
  std::string bytes(reinterpret_cast<const char*>(card_->bytes().data()), card_->bytes().size());
  bytes.back() ^= 1;
  bytes[offsetof(cachecard::CardHeader, card_id)] ^= 1;  // another id: not a dedup hit
  cachecard::SealHeaderChecksum(
      absl::MakeSpan(reinterpret_cast<uint8_t*>(bytes.data()), card_->metadata().metadata_bytes));
  bool sent = false;
  absl::StatusOr<CardHandle> bad = importer.Import([&](std::string* out) {
    if (sent) return false;
    *out = bytes;
    sent = true;
    return true;
  });
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("not a valid card (DATA_LOSS)"));
  EXPECT_THAT(bad.status().message(), HasSubstr("checksum of segment 0"));

  // Over limits.max_card_bytes: named, and nothing after the first chunk read.
  CardImporter small(store_.get(), 1024, 2);
  reads = 0;
  pos = 0;
  absl::StatusOr<CardHandle> over = small.Import(Stream(&reads, &pos));
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.status().message(), HasSubstr("limits.max_card_bytes"));
  EXPECT_EQ(reads, 1);
}

TEST_F(CardImporterTest, ImportsBeyondTheConcurrencyCapAreResourceExhausted) {
  CardImporter importer(store_.get(), 1 << 20, 2);
  // Two imports block in their second read until released.
  absl::Notification release;
  std::atomic<int> blocked{0};
  std::vector<std::thread> threads;
  std::vector<absl::Status> results(2);
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      int reads = 0;
      size_t pos = 0;
      CardStore::ChunkReader stream = Stream(&reads, &pos);
      results[i] = importer
                       .Import([&](std::string* out) {
                         if (reads == 1) {
                           ++blocked;
                           release.WaitForNotification();
                         }
                         return stream(out);
                       })
                       .status();
    });
  }
  while (blocked.load() < 2) std::this_thread::yield();
  EXPECT_EQ(importer.in_progress(), 2);
  int reads = 0;
  size_t pos = 0;
  absl::StatusOr<CardHandle> third = importer.Import(Stream(&reads, &pos));
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.status().message(), HasSubstr("limits.max_concurrent_imports = 2"));
  EXPECT_EQ(reads, 0);  // the refused stream is not read at all
  release.Notify();
  for (std::thread& t : threads) t.join();
  EXPECT_TRUE(results[0].ok()) << results[0];
  EXPECT_TRUE(results[1].ok()) << results[1];
  EXPECT_EQ(importer.in_progress(), 0);
  // A slot is free again.
  reads = 0;
  pos = 0;
  EXPECT_TRUE(importer.Import(Stream(&reads, &pos)).ok());
  EXPECT_EQ(store_->List().size(), 1u);  // the same card each time: stored once
}

}  // namespace
}  // namespace qkvshare::daemon

#include "daemon/card_listing.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agents/kv_cache.h"
#include "cachecard/build.h"
#include "cachecard/card.h"
#include "cachecard/format.h"
#include "cachecard/testing/synthetic_kv.h"
#include "gtest/gtest.h"

namespace qkvshare::daemon {
namespace {

using cachecard::shm::CardHandle;
using cachecard::shm::CardStore;

constexpr agents::KvShape kShape{3, 2, 8};

class CardListingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_ = *cachecard::testing::MakeSyntheticCache(kShape, DType::kF32, 32, 1);
  }

  // A store whose expiry timer runs every millisecond with a TTL of `ttl`.
  std::unique_ptr<CardStore> MakeStore(absl::Duration ttl) {
    cachecard::shm::CardStoreOptions options;
    options.instance = absl::StrCat(
        "lst", ::getpid(), "-", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    options.quota_bytes = uint64_t{1} << 30;
    options.ttl = ttl;
    options.expiry_period = absl::Milliseconds(1);
    options.on_evict = [this](const cachecard::CardId&) { ++evicted_; };
    return *CardStore::Create(options);
  }

  // A 4-bit card of `tokens` tokens whose token ids depend on `seed` (so on
  // its id), incremental on `parent` if given.
  absl::StatusOr<CardHandle> Build(CardStore* store, int seed, int64_t tokens,
                                   const cachecard::Card* parent = nullptr) {
    std::vector<int32_t> ids;
    if (parent != nullptr) ids = parent->metadata().token_ids;
    for (auto i = static_cast<int64_t>(ids.size()); i < tokens; ++i) {
      ids.push_back(static_cast<int32_t>(1000 * seed + i));
    }
    const int64_t first = parent != nullptr ? parent->metadata().total_tokens() : 0;
    return store->Build(
        *cache_, tokens, ids,
        cachecard::CardEncoding::Quantized(cachecard::testing::UniformPlan(tokens - first, 4)),
        cachecard::ModelFingerprint{}, cachecard::Provenance(), parent);
  }

  std::unique_ptr<agents::KvCache> cache_;
  std::atomic<int> evicted_{0};
};

TEST_F(CardListingTest, ReportsMetadataAndChainBytesWithoutCountingAsUse) {
  auto store = MakeStore(absl::ZeroDuration());
  CardHandle parent = *Build(store.get(), 1, 16);
  CardHandle child = *Build(store.get(), 1, 24, parent.get());
  CardHandle other = *Build(store.get(), 2, 8);
  const uint64_t parent_bytes = parent->bytes().size();
  const uint64_t child_bytes = child->bytes().size();
  const std::vector<cachecard::shm::StoredCardInfo> before = store->List();

  const std::vector<CardListing> listed = ListStoredCards(*store);
  ASSERT_EQ(listed.size(), 3u);
  for (size_t i = 0; i < listed.size(); ++i) {
    // Same order and bookkeeping as List(): the listing's own hold is not
    // counted, and it is not a use (no LRU or idle change).
    EXPECT_EQ(listed[i].stored.id, before[i].id);
    EXPECT_EQ(listed[i].stored.handles, 1);
    EXPECT_EQ(listed[i].summary.card_id, before[i].id.ToHex());
    EXPECT_EQ(listed[i].format_version, cachecard::kCardFormatVersion);
    ASSERT_EQ(listed[i].layer_k_bytes.size(), 3u);
    ASSERT_EQ(listed[i].layer_v_bytes.size(), 3u);
    for (int l = 0; l < 3; ++l) {
      EXPECT_GT(listed[i].layer_k_bytes[l], 0);
      EXPECT_EQ(static_cast<uint64_t>(listed[i].layer_k_bytes[l] + listed[i].layer_v_bytes[l]),
                listed[i].summary.layer_bytes[l]);
    }
  }
  const std::vector<cachecard::shm::StoredCardInfo> after = store->List();
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].id, before[i].id);
    EXPECT_EQ(after[i].handles, before[i].handles);
    EXPECT_GE(after[i].idle, before[i].idle);  // not reset by the listing
  }

  absl::StatusOr<CardListing> c = DescribeStoredCard(*store, child->id());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->chain_bytes, static_cast<int64_t>(parent_bytes + child_bytes));
  EXPECT_EQ(c->summary.parent_id, parent->id().ToHex());
  EXPECT_EQ(c->summary.first_token, 16);
  EXPECT_EQ(c->summary.total_tokens, 24);
  EXPECT_EQ(c->stored.children, 0);
  absl::StatusOr<CardListing> p = DescribeStoredCard(*store, parent->id());
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->chain_bytes, static_cast<int64_t>(parent_bytes));
  EXPECT_EQ(p->stored.children, 1);
  EXPECT_EQ(p->stored.handles, 1);

  cachecard::CardId unknown;
  unknown.bytes.fill(7);
  EXPECT_EQ(DescribeStoredCard(*store, unknown).status().code(), absl::StatusCode::kNotFound);
}

// The daemon lists cards on RPC threads while the store's expiry timer (and
// any other RPC's store call) drops expired cards at any moment. A card being
// read must not be dropped under the reader: before CardStore::Peek,
// ListCards/GetCard read cards found by Find() without holding them, and
// ThreadSanitizer reported the eviction's delete of the card racing with the
// listing's reads (Summarize), a use after free in the daemon.
TEST_F(CardListingTest, ListingWhileCardsExpire) {
  auto store = MakeStore(absl::Microseconds(200));
  std::atomic<bool> done{false};
  std::atomic<int> built{0};
  std::thread builder([&] {
    for (int seed = 1; !done.load(); ++seed) {
      // A parent and its child, released at once: both expire within about
      // a millisecond (the child first, then the parent it pinned).
      absl::StatusOr<CardHandle> parent = Build(store.get(), seed, 16);
      ASSERT_TRUE(parent.ok()) << parent.status();
      absl::StatusOr<CardHandle> child = Build(store.get(), seed, 24, parent->get());
      ASSERT_TRUE(child.ok()) << child.status();
      built += 2;
    }
  });
  int listed = 0, chains = 0;
  const absl::Time end = absl::Now() + absl::Seconds(2);
  while (absl::Now() < end || built.load() < 100 || evicted_.load() < 50) {
    for (const CardListing& c : ListStoredCards(*store)) {
      ++listed;
      EXPECT_EQ(c.summary.card_id, c.stored.id.ToHex());
      EXPECT_EQ(c.summary.card_bytes, c.stored.bytes);
      EXPECT_GE(c.chain_bytes, static_cast<int64_t>(c.stored.bytes));
      if (c.summary.first_token > 0) {
        ++chains;
        EXPECT_GT(c.chain_bytes, static_cast<int64_t>(c.stored.bytes));  // the parent counted
      }
      absl::StatusOr<CardListing> one = DescribeStoredCard(*store, c.stored.id);
      if (one.ok()) {
        EXPECT_EQ(one->summary.card_id, c.summary.card_id);
      } else {
        EXPECT_EQ(one.status().code(), absl::StatusCode::kNotFound);  // expired meanwhile
      }
    }
    if (absl::Now() > end + absl::Seconds(30)) break;  // a stuck builder fails below
  }
  done = true;
  builder.join();
  EXPECT_GE(built.load(), 100);
  EXPECT_GE(evicted_.load(), 50);  // the timer really dropped cards meanwhile
  EXPECT_GT(listed, 0);
  EXPECT_GT(chains, 0);
  std::printf("%d cards listed (%d incremental), %d built, %d evicted meanwhile\n", listed, chains,
              built.load(), evicted_.load());
}

}  // namespace
}  // namespace qkvshare::daemon

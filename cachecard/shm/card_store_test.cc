#include "cachecard/shm/card_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "agents/kv_cache.h"
#include "cachecard/build.h"
#include "cachecard/card.h"
#include "cachecard/card_file.h"
#include "cachecard/file_io.h"
#include "cachecard/format.h"
#include "cachecard/inject.h"
#include "cachecard/metadata_codec.h"
#include "cachecard/shm/shm_segment.h"
#include "cachecard/testing/synthetic_kv.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::cachecard::shm {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr agents::KvShape kShape{5, 4, 8};

// A unique instance name per test (tests of one binary run in one process).
std::string Instance() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return absl::StrCat("t", ::getpid(), "-", info->name());
}

CardId Id(uint8_t seed) {
  CardId id;
  id.bytes.fill(seed);
  return id;
}

bool SegmentExists(const std::string& name) {
  struct stat st;
  return ::stat(absl::StrCat(kShmDir, name).c_str(), &st) == 0;
}

class CardStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cache_ = *testing::MakeSyntheticCache(kShape, DType::kF32, 40, 1);
    ids_.resize(40);
    std::iota(ids_.begin(), ids_.end(), 1);
  }

  std::unique_ptr<CardStore> MakeStore(uint64_t quota, absl::Duration ttl = absl::ZeroDuration()) {
    CardStoreOptions options;
    options.instance = Instance();
    options.quota_bytes = quota;
    options.ttl = ttl;
    options.expiry_period = absl::ZeroDuration();  // the fake clock is not thread-safe
    options.allocate = allocate_;
    options.on_evict = [this](const CardId& id) { evicted_.push_back(id); };
    options.clock = [this] { return now_; };
    absl::StatusOr<std::unique_ptr<CardStore>> store = CardStore::Create(options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  // Token ids of card `seed`: the parent's, then 1000 * seed + position.
  static std::vector<int32_t> TokensFor(uint8_t seed, int64_t tokens, const Card* parent) {
    std::vector<int32_t> ids;
    if (parent != nullptr) ids = parent->metadata().token_ids;
    for (auto i = static_cast<int64_t>(ids.size()); i < tokens; ++i) ids.push_back(1000 * seed + i);
    return ids;
  }

  // A 4-bit card of the first `tokens` tokens whose content (token ids)
  // depends on `seed`; IdOf(seed) is its id once built.
  absl::StatusOr<CardHandle> Build(CardStore* store, uint8_t seed, int64_t tokens = 20,
                                   const Card* parent = nullptr,
                                   const std::string& agent = "agent") {
    Provenance prov;
    prov.source_agent = agent;
    const int64_t first = parent ? parent->metadata().total_tokens() : 0;
    const std::vector<int32_t> ids = TokensFor(seed, tokens, parent);
    absl::StatusOr<CardHandle> h = store->Build(
        *cache_, tokens, ids, CardEncoding::Quantized(testing::UniformPlan(tokens - first, 4)),
        ModelFingerprint{}, prov, parent);
    if (h.ok()) {
      absl::MutexLock lock(&mu_);
      ids_of_[seed] = (*h)->id();
    }
    return h;
  }
  CardId IdOf(uint8_t seed) {
    absl::MutexLock lock(&mu_);
    return ids_of_.at(seed);
  }

  uint64_t CardBytes() {
    auto store = MakeStore(uint64_t{1} << 30);
    auto handle = *Build(store.get(), 1);
    return handle->bytes().size();
  }

  std::unique_ptr<agents::KvCache> cache_;
  std::vector<int32_t> ids_;
  absl::Time now_ = absl::FromUnixSeconds(1'780'000'000);
  std::vector<CardId> evicted_;
  std::function<absl::Status(ShmSegmentSink&, uint64_t)> allocate_;  // options.allocate
  absl::Mutex mu_;
  std::map<uint8_t, CardId> ids_of_;
};

TEST_F(CardStoreTest, PutGetListAndSegmentMode) {
  auto store = MakeStore(uint64_t{1} << 30);
  absl::StatusOr<CardHandle> built = Build(store.get(), 1);
  ASSERT_TRUE(built.ok()) << built.status();
  const std::string name = store->SegmentName(IdOf(1));
  EXPECT_EQ(name, absl::StrCat("/qkvshare.", Instance(), ".", IdOf(1).ToHex()));
  struct stat st;
  ASSERT_EQ(::stat(absl::StrCat(kShmDir, name).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), (*built)->bytes().size());
  EXPECT_TRUE((*built)->VerifySections().ok());

  now_ += absl::Seconds(5);
  absl::StatusOr<CardHandle> got = store->Get(IdOf(1));
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->get(), built->get());  // same mapping, zero copy
  const std::vector<StoredCardInfo> rows = store->List();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].id, IdOf(1));
  EXPECT_EQ(rows[0].handles, 2);
  EXPECT_EQ(rows[0].total_tokens, 20);
  EXPECT_EQ(rows[0].avg_bits, 4.0);
  EXPECT_EQ(rows[0].segment, name);
  EXPECT_EQ(rows[0].age, absl::Seconds(5));
  EXPECT_EQ(store->used_bytes(), (*built)->bytes().size());

  EXPECT_EQ(store->Get(Id(9)).status().code(), absl::StatusCode::kNotFound);
  // Only the named segment: the pending one it was written to is gone.
  EXPECT_FALSE(SegmentExists(PendingSegmentName(Instance(), 1)));
}

TEST_F(CardStoreTest, BuildingTheSameContentAgainReturnsTheStoredCard) {
  auto store = MakeStore(uint64_t{1} << 30);
  CardHandle first = *Build(store.get(), 1, 20, nullptr, "planner");
  const uint64_t bytes = store->used_bytes();
  absl::StatusOr<CardHandle> again = Build(store.get(), 1, 20, nullptr, "writer");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->get(), first.get());  // the stored card, provenance and all
  EXPECT_EQ((*again)->metadata().provenance.source_agent, "planner");
  EXPECT_EQ(store->used_bytes(), bytes);  // one copy
  const std::vector<StoredCardInfo> rows = store->List();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].handles, 2);
  EXPECT_FALSE(SegmentExists(PendingSegmentName(Instance(), 2)));
  // Other content, another card.
  ASSERT_TRUE(Build(store.get(), 2).ok());
  EXPECT_NE(IdOf(2), IdOf(1));
  EXPECT_EQ(store->List().size(), 2u);
}

TEST_F(CardStoreTest, LookupChecksFingerprintAndTokenDigest) {
  auto store = MakeStore(uint64_t{1} << 30);
  CardHandle card = *Build(store.get(), 1);
  const ModelFingerprint same{};
  ModelFingerprint other{};
  other[0] = 1;
  const Sha256 tokens = DigestTokens(TokensFor(1, 20, nullptr));
  const Sha256 wrong = DigestTokens(TokensFor(2, 20, nullptr));
  absl::StatusOr<CardHandle> ok = store->Get(IdOf(1), {&same, &tokens});
  EXPECT_TRUE(ok.ok()) << ok.status();
  absl::StatusOr<CardHandle> fp = store->Get(IdOf(1), {&other, &tokens});
  EXPECT_EQ(fp.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(fp.status().message(),
              HasSubstr("is for model fingerprint 000000000000, expected 010000000000"));
  absl::StatusOr<CardHandle> ctx = store->Get(IdOf(1), {&same, &wrong});
  EXPECT_EQ(ctx.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(ctx.status().message(), HasSubstr("holds another context (token digest"));
  EXPECT_EQ(store->List()[0].handles, 2);  // `card` and `ok`: failed lookups take no reference
}

TEST_F(CardStoreTest, QuotaEvictsLeastRecentlyUsedUnreferencedCards) {
  const uint64_t bytes = CardBytes();
  auto store = MakeStore(3 * bytes);
  for (uint8_t i = 1; i <= 3; ++i) ASSERT_TRUE(Build(store.get(), i).ok());  // handles dropped
  ASSERT_TRUE(store->Get(IdOf(1)).ok());  // 1 is now more recent than 2 and 3
  ASSERT_TRUE(Build(store.get(), 4).ok());
  std::vector<CardId> ids;
  for (const StoredCardInfo& row : store->List()) ids.push_back(row.id);
  EXPECT_THAT(ids, ElementsAre(IdOf(3), IdOf(1), IdOf(4)));  // 2 evicted; LRU first
  EXPECT_FALSE(SegmentExists(store->SegmentName(IdOf(2))));
  EXPECT_EQ(store->used_bytes(), 3 * bytes);
  EXPECT_THAT(evicted_, ElementsAre(IdOf(2)));
}

TEST_F(CardStoreTest, EvictionOrderUnneededThenNeededLruAndPinsStay) {
  const uint64_t bytes = CardBytes();
  auto store = MakeStore(4 * bytes);
  for (uint8_t i = 1; i <= 4; ++i) ASSERT_TRUE(Build(store.get(), i).ok());  // LRU: 1 2 3 4
  absl::StatusOr<CardNeed> need1 = store->Need(IdOf(1));  // a queued task needs 1
  ASSERT_TRUE(need1.ok());
  absl::StatusOr<CardNeed> need3 = store->Need(IdOf(3));
  ASSERT_TRUE(store->Pin(IdOf(2), now_ + absl::Minutes(1)).ok());  // a kept card
  // 1 is the least recently used, but needed; 2 is pinned: 4 goes first.
  ASSERT_TRUE(Build(store.get(), 5).ok());
  EXPECT_THAT(evicted_, ElementsAre(IdOf(4)));
  // Only needed or pinned cards left besides 5: the least recently used needed one (1).
  ASSERT_TRUE(store->Pin(IdOf(5), absl::InfiniteFuture()).ok());
  ASSERT_TRUE(Build(store.get(), 6).ok());
  EXPECT_THAT(evicted_, ElementsAre(IdOf(4), IdOf(1)));
  // 3 is older than 6, but needed: 6 goes.
  ASSERT_TRUE(Build(store.get(), 7).ok());
  EXPECT_THAT(evicted_, ElementsAre(IdOf(4), IdOf(1), IdOf(6)));
  *need1 = CardNeed();  // releasing the need of an evicted card is harmless
  *need3 = CardNeed();  // 3 is an ordinary card again, older than 7
  ASSERT_TRUE(Build(store.get(), 8).ok());
  EXPECT_THAT(evicted_, ElementsAre(IdOf(4), IdOf(1), IdOf(6), IdOf(3)));
  // Everything left is pinned or in use: full.
  CardHandle h7 = *store->Get(IdOf(7));
  CardHandle h8 = *store->Get(IdOf(8));
  absl::StatusOr<CardHandle> full = Build(store.get(), 9);
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  // The pin of 2 expires: it is an ordinary card again.
  now_ += absl::Minutes(2);
  ASSERT_TRUE(Build(store.get(), 9).ok());
  EXPECT_EQ(evicted_.back(), IdOf(2));
  std::vector<StoredCardInfo> rows = store->List();
  ASSERT_EQ(rows.size(), 4u);
  for (const StoredCardInfo& row : rows) {
    if (row.id == IdOf(5)) EXPECT_EQ(row.pinned_until, absl::InfiniteFuture());
  }
  // An explicit delete removes a pinned card.
  EXPECT_TRUE(store->Remove(IdOf(5)).ok());
}

TEST_F(CardStoreTest, PeekIsNotAUse) {
  const uint64_t bytes = CardBytes();
  auto store = MakeStore(3 * bytes);
  for (uint8_t i = 1; i <= 3; ++i) ASSERT_TRUE(Build(store.get(), i).ok());  // LRU: 1 2 3
  now_ += absl::Seconds(5);
  {
    CardHandle peeked = *store->Peek(IdOf(1));
    EXPECT_EQ(peeked->id(), IdOf(1));
    EXPECT_EQ(store->List()[0].handles, 1);
  }
  std::vector<StoredCardInfo> rows = store->List();
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].id, IdOf(1));  // still the least recently used
  EXPECT_EQ(rows[0].handles, 0);
  EXPECT_EQ(rows[0].idle, absl::Seconds(5));  // not reset
  ASSERT_TRUE(Build(store.get(), 4).ok());
  EXPECT_THAT(evicted_, ElementsAre(IdOf(1)));  // a Get() would have made it 2
  EXPECT_EQ(store->Peek(IdOf(1)).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CardStoreTest, APeekedCardAndItsChainStayUntilReleased) {
  auto store = MakeStore(uint64_t{1} << 30, absl::Minutes(10));
  {
    CardHandle parent = *Build(store.get(), 1);
    ASSERT_TRUE(Build(store.get(), 2, 30, parent.get()).ok());
  }
  CardHandle peeked = *store->Peek(IdOf(2));
  now_ += absl::Minutes(11);
  store->EvictExpired();  // both expired, but the child is held and pins its parent
  EXPECT_TRUE(evicted_.empty());
  ASSERT_NE(store->Find(IdOf(1)), nullptr);
  EXPECT_EQ(store->Remove(IdOf(2)).code(), absl::StatusCode::kFailedPrecondition);
  peeked = CardHandle();
  store->EvictExpired();
  EXPECT_THAT(evicted_, ElementsAre(IdOf(2), IdOf(1)));
}

TEST_F(CardStoreTest, TtlSkipsPinnedAndNeededCards) {
  auto store = MakeStore(uint64_t{1} << 30, absl::Minutes(10));
  for (uint8_t i = 1; i <= 3; ++i) ASSERT_TRUE(Build(store.get(), i).ok());
  ASSERT_TRUE(store->Pin(IdOf(1), now_ + absl::Minutes(30)).ok());
  CardNeed need = *store->Need(IdOf(2));
  now_ += absl::Minutes(11);
  store->EvictExpired();
  EXPECT_THAT(evicted_, ElementsAre(IdOf(3)));
  need = CardNeed();
  store->EvictExpired();
  EXPECT_THAT(evicted_, ElementsAre(IdOf(3), IdOf(2)));
  now_ += absl::Minutes(20);  // the pin of 1 expired
  store->EvictExpired();
  EXPECT_THAT(evicted_, ElementsAre(IdOf(3), IdOf(2), IdOf(1)));
}

TEST_F(CardStoreTest, CardsInUseAreNeverEvicted) {
  const uint64_t bytes = CardBytes();
  auto store = MakeStore(2 * bytes);
  CardHandle a = *Build(store.get(), 1);
  CardHandle b = *Build(store.get(), 2);
  absl::StatusOr<CardHandle> c = Build(store.get(), 3);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(), HasSubstr("card store full"));
  EXPECT_EQ(store->List().size(), 2u);
  b = CardHandle();  // release: 2 becomes evictable
  ASSERT_TRUE(Build(store.get(), 3).ok());
  EXPECT_TRUE(store->Get(IdOf(1)).ok());
  EXPECT_EQ(store->Get(IdOf(2)).status().code(), absl::StatusCode::kNotFound);

  Provenance prov;
  absl::StatusOr<CardHandle> huge =
      store->Build(*cache_, 40, ids_, CardEncoding::Full(), ModelFingerprint{}, prov, nullptr);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(huge.status().message(), HasSubstr("exceeds the store quota"));
}

TEST_F(CardStoreTest, AChildPinsItsParent) {
  const uint64_t bytes = CardBytes();
  auto store = MakeStore(3 * bytes);
  CardHandle parent = *Build(store.get(), 1, 20);
  CardHandle child = *Build(store.get(), 2, 30, parent.get());
  parent = CardHandle();  // only the child references it now
  EXPECT_EQ(store->Remove(IdOf(1)).code(), absl::StatusCode::kFailedPrecondition);
  // Fill the quota: the unreferenced parent stays (pinned by the child).
  absl::StatusOr<CardHandle> other = Build(store.get(), 3);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(Build(store.get(), 4).status().code(), absl::StatusCode::kResourceExhausted);

  // Injecting the child resolves its parent through the store.
  auto dst = *agents::KvCache::Create(kShape, DType::kF32, 64);
  ASSERT_TRUE(InjectCard(*child, store.get(), ModelFingerprint{}, dst.get()).ok());
  EXPECT_EQ(dst->length(), 30);

  child = CardHandle();
  *other = CardHandle();
  ASSERT_TRUE(store->Remove(IdOf(2)).ok());  // the child goes, the parent is free
  EXPECT_TRUE(store->Remove(IdOf(1)).ok());
}

TEST_F(CardStoreTest, AChildWithoutItsParentIsRefused) {
  auto store = MakeStore(uint64_t{1} << 30);
  auto parent = *BuildCard(*cache_, 10, absl::MakeConstSpan(ids_).first(10), CardEncoding::Full(),
                           ModelFingerprint{}, Provenance());
  absl::StatusOr<CardHandle> child = Build(store.get(), 2, 20, parent.get());
  EXPECT_EQ(child.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(child.status().message(), HasSubstr("parent card " + parent->id().ToHex()));
  EXPECT_FALSE(SegmentExists(PendingSegmentName(Instance(), 1)));
  EXPECT_EQ(store->used_bytes(), 0u);
}

TEST_F(CardStoreTest, TtlEvictsOnlyUnreferencedExpiredCards) {
  auto store = MakeStore(uint64_t{1} << 30, absl::Minutes(10));
  CardHandle kept = *Build(store.get(), 1);
  ASSERT_TRUE(Build(store.get(), 2).ok());
  now_ += absl::Minutes(5);
  ASSERT_TRUE(Build(store.get(), 3).ok());
  now_ += absl::Minutes(6);  // 1 and 2 are 11 minutes old, 3 is 6
  store->EvictExpired();
  std::vector<CardId> ids;
  for (const StoredCardInfo& row : store->List()) ids.push_back(row.id);
  EXPECT_THAT(ids, ElementsAre(IdOf(1), IdOf(3)));
  EXPECT_THAT(evicted_, ElementsAre(IdOf(2)));
  ASSERT_TRUE(store->Remove(IdOf(3)).ok());
  EXPECT_THAT(evicted_, ElementsAre(IdOf(2)));  // explicit removal is not an eviction
}

TEST_F(CardStoreTest, ExpiredCardsGoOnATimerWithoutStoreTraffic) {
  CardStoreOptions options;
  options.instance = Instance();
  options.ttl = absl::Milliseconds(300);  // real clock, default expiry_period (250 ms)
  auto store = *CardStore::Create(options);
  const absl::Time first = absl::Now();
  std::vector<std::string> idle;
  for (uint8_t seed = 1; seed <= 3; ++seed) {
    idle.push_back(store->SegmentName((*Build(store.get(), seed))->id()));
  }
  CardHandle in_use = *Build(store.get(), 4);
  const std::string in_use_name = store->SegmentName(in_use->id());
  const absl::Time stored = absl::Now();
  // No store call from here on: only the file system is watched.
  const bool early = absl::Now() - first < absl::Milliseconds(200);
  if (early) {  // not gone before their TTL (checkable when building was quick)
    EXPECT_TRUE(std::all_of(idle.begin(), idle.end(), SegmentExists));
  }
  auto all_gone = [&] { return std::none_of(idle.begin(), idle.end(), SegmentExists); };
  while (!all_gone() && absl::Now() - stored < absl::Seconds(5)) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  const absl::Duration took = absl::Now() - stored;
  EXPECT_TRUE(all_gone());
  EXPECT_LT(took, absl::Milliseconds(300) + absl::Seconds(1)) << took;
  EXPECT_TRUE(SegmentExists(in_use_name));  // referenced: kept past its TTL
  in_use = CardHandle();
  const absl::Time released = absl::Now();
  while (SegmentExists(in_use_name) && absl::Now() - released < absl::Seconds(5)) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_FALSE(SegmentExists(in_use_name));
  EXPECT_LT(absl::Now() - released, absl::Seconds(1));
}

TEST_F(CardStoreTest, ExpiryDropsOldestFirstAndAnExpiredChainInOnePass) {
  auto store = MakeStore(uint64_t{1} << 30, absl::Seconds(10));
  {
    CardHandle parent = *Build(store.get(), 1, 10);
    now_ += absl::Seconds(1);
    CardHandle child = *Build(store.get(), 2, 20, parent.get());
  }
  for (uint8_t seed = 3; seed <= 6; ++seed) {
    now_ += absl::Seconds(1);
    ASSERT_TRUE(Build(store.get(), seed).ok());
  }
  // 14 s after the parent: parent, child, 3 and 4 are older than 10 s, 5 is
  // exactly 10 s old (kept), 6 younger.
  now_ += absl::Seconds(9);
  store->EvictExpired();
  ASSERT_EQ(evicted_.size(), 4u);
  // The child first (the parent waited for it), then its parent, then by age.
  EXPECT_EQ(evicted_[0], IdOf(2));
  EXPECT_EQ(evicted_[1], IdOf(1));
  EXPECT_EQ(evicted_[2], IdOf(3));
  EXPECT_EQ(evicted_[3], IdOf(4));
  EXPECT_EQ(store->List().size(), 2u);
}

TEST_F(CardStoreTest, FullShmEvictsUnreferencedCardsAndRetriesOnce) {
  // /dev/shm simulated as a tmpfs that holds three cards (the quota is far
  // larger): the allocation fails as posix_fallocate does with ENOSPC.
  const uint64_t card = CardBytes();
  CardStore* store_ptr = nullptr;
  int failures = 0;
  allocate_ = [&](ShmSegmentSink& segment, uint64_t bytes) {
    if (store_ptr->used_bytes() + bytes > 3 * card) {
      ++failures;
      return absl::ResourceExhaustedError("cannot allocate: No space left on device");
    }
    return segment.Begin(bytes);
  };
  auto store = MakeStore(uint64_t{1} << 30);
  store_ptr = store.get();
  for (uint8_t seed = 1; seed <= 3; ++seed) ASSERT_TRUE(Build(store.get(), seed).ok());
  ASSERT_EQ(failures, 0);
  // A fourth: ENOSPC, the least recently used unreferenced card goes, retry works.
  absl::StatusOr<CardHandle> fourth = Build(store.get(), 4);
  ASSERT_TRUE(fourth.ok()) << fourth.status();
  EXPECT_EQ(failures, 1);
  ASSERT_EQ(evicted_.size(), 1u);
  EXPECT_EQ(evicted_[0], IdOf(1));
  EXPECT_FALSE(SegmentExists(store->SegmentName(IdOf(1))));
  // Every card in use: nothing to evict, the retry fails too and nothing is left.
  CardHandle h2 = *store->Get(IdOf(2)), h3 = *store->Get(IdOf(3));
  failures = 0;
  absl::StatusOr<CardHandle> fifth = Build(store.get(), 5);
  EXPECT_EQ(fifth.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(fifth.status().message(), HasSubstr("No space left on device"));
  EXPECT_THAT(fifth.status().message(),
              HasSubstr("retried once after evicting 0 unreferenced cards"));
  EXPECT_EQ(failures, 2);  // the first try and one retry, no more
  EXPECT_EQ(store->List().size(), 3u);
  EXPECT_EQ(store->used_bytes(), 3 * card);
}

TEST_F(CardStoreTest, StartRemovesCrashLeftoversOfTheSameInstanceOnly) {
  const std::string mine = absl::StrCat("/qkvshare.", Instance(), ".", Id(7).ToHex());
  const std::string other = absl::StrCat("/qkvshare.", Instance(), "x.", Id(7).ToHex());
  for (const std::string& name : {mine, other}) {
    const int fd = ::shm_open(name.c_str(), O_CREAT | O_RDWR, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 100), 0);
    ::close(fd);
  }
  auto store = MakeStore(uint64_t{1} << 20);
  EXPECT_FALSE(SegmentExists(mine));
  EXPECT_TRUE(SegmentExists(other));
  // What was removed is reported for the start-up log.
  EXPECT_EQ(store->stale_at_start().removed, 1);
  EXPECT_EQ(store->stale_at_start().bytes, 100u);
  EXPECT_EQ(store->stale_at_start().foreign, 0);
  ::shm_unlink(other.c_str());
}

// A private directory for lock files.
std::string LockDir() {
  char tmpl[] = "/tmp/qkvlockXXXXXX";
  const char* dir = ::mkdtemp(tmpl);
  EXPECT_NE(dir, nullptr);
  return dir == nullptr ? std::string("/tmp") : std::string(dir);
}

// Issue 18 item 5: a symlink planted at the lock name is refused, never
// followed (the target is not created).
TEST(InstanceLockTest, SymlinkIsRefused) {
  const std::string dir = LockDir();
  const std::string target = dir + "/target";
  const std::string link = absl::StrCat(dir, "/qkvshare.", Instance(), ".lock");
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  absl::StatusOr<std::unique_ptr<InstanceLock>> lock = InstanceLock::Acquire(Instance(), dir);
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(lock.status().message(), HasSubstr("is a symbolic link"));
  struct stat st;
  EXPECT_NE(::lstat(target.c_str(), &st), 0);
  ::unlink(link.c_str());
  // The same name as a real file works, and the lock lives in `dir`.
  lock = InstanceLock::Acquire(Instance(), dir);
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_EQ((*lock)->path(), link);
  ASSERT_EQ(::lstat(link.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  lock->reset();
  ::rmdir(dir.c_str());
}

TEST(InstanceLockTest, GroupReadableOrForeignLockIsRefused) {
  const std::string dir = LockDir();
  const std::string path = absl::StrCat(dir, "/qkvshare.", Instance(), ".lock");
  const int fd = ::open(path.c_str(), O_CREAT | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::fchmod(fd, 0644), 0);
  absl::StatusOr<std::unique_ptr<InstanceLock>> lock = InstanceLock::Acquire(Instance(), dir);
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(lock.status().message(), HasSubstr("has mode 0644; want 0600"));
  // Root (outside a user namespace) can give the file away: a squatter's
  // lock. The Bazel sandbox's root cannot, then only the mode is checked.
  if (::geteuid() == 0 && ::fchown(fd, 65534, 65534) == 0) {
    ASSERT_EQ(::fchmod(fd, 0600), 0);
    lock = InstanceLock::Acquire(Instance(), dir);
    EXPECT_EQ(lock.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(lock.status().message(), HasSubstr("belongs to "));
    EXPECT_THAT(lock.status().message(), HasSubstr("(uid 65534)"));
    EXPECT_THAT(lock.status().message(), HasSubstr("another user holds the instance name"));
  }
  ::close(fd);
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());
}

TEST_F(CardStoreTest, OneLiveStorePerInstance) {
  auto store = MakeStore(uint64_t{1} << 20);
  CardStoreOptions options;
  options.instance = Instance();
  absl::StatusOr<std::unique_ptr<CardStore>> second = CardStore::Create(options);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr("in use by another process"));
  store.reset();
  EXPECT_TRUE(CardStore::Create(options).ok());
  options.instance = "bad/name";
  EXPECT_EQ(CardStore::Create(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CardStoreTest, DestructionUnlinksEverySegment) {
  std::string name;
  {
    auto store = MakeStore(uint64_t{1} << 20);
    { ASSERT_TRUE(Build(store.get(), 1).ok()); }
    name = store->SegmentName(IdOf(1));
    EXPECT_TRUE(SegmentExists(name));
  }
  EXPECT_FALSE(SegmentExists(name));
}

TEST_F(CardStoreTest, AnotherProcessSeesTheSameBytes) {
  auto store = MakeStore(uint64_t{1} << 20);
  CardHandle card = *Build(store.get(), 1);
  const std::string name = store->SegmentName(IdOf(1));
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // child: open by name, read-only, validate, report
    ::close(pipefd[0]);
    uint64_t report[2] = {0, 0};
    absl::StatusOr<CardPtr> opened = OpenSharedCard(name);
    if (opened.ok()) {
      report[0] = (*opened)->bytes().size();
      report[1] = SectionChecksum((*opened)->bytes());
    }
    const bool ok = ::write(pipefd[1], report, sizeof report) == sizeof report;
    ::_exit(opened.ok() && ok ? 0 : 1);
  }
  ::close(pipefd[1]);
  uint64_t report[2] = {0, 0};
  ASSERT_EQ(::read(pipefd[0], report, sizeof report), static_cast<ssize_t>(sizeof report));
  ::close(pipefd[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(report[0], card->bytes().size());
  EXPECT_EQ(report[1], SectionChecksum(card->bytes()));
}

TEST_F(CardStoreTest, ReadersKeepTheirMappingAfterEviction) {
  auto store = MakeStore(uint64_t{1} << 20);
  { ASSERT_TRUE(Build(store.get(), 1).ok()); }
  absl::StatusOr<CardPtr> reader = OpenSharedCard(store->SegmentName(IdOf(1)));
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_TRUE(store->Remove(IdOf(1)).ok());
  EXPECT_EQ(OpenSharedCard(store->SegmentName(IdOf(1))).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE((*reader)->VerifySections().ok());
}

TEST_F(CardStoreTest, AddCopiesAValidatedCardOnce) {
  auto store = MakeStore(uint64_t{1} << 20);
  Provenance prov;
  prov.source_agent = "a";
  auto card = *BuildCard(*cache_, 12, absl::MakeConstSpan(ids_).first(12), CardEncoding::Full(),
                         ModelFingerprint{}, prov);
  absl::StatusOr<CardHandle> stored = store->Add(*card);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_TRUE(std::equal(card->bytes().begin(), card->bytes().end(), (*stored)->bytes().begin(),
                         (*stored)->bytes().end()));
  // Again, and the same content with other provenance: OK, the stored card.
  absl::StatusOr<CardHandle> again = store->Add(*card);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->get(), stored->get());
  prov.source_agent = "b";
  auto relabelled = *BuildCard(*cache_, 12, absl::MakeConstSpan(ids_).first(12),
                               CardEncoding::Full(), ModelFingerprint{}, prov);
  ASSERT_EQ(relabelled->id(), card->id());
  absl::StatusOr<CardHandle> same = store->Add(*relabelled);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->get(), stored->get());
  EXPECT_EQ(store->used_bytes(), card->bytes().size());
}

TEST_F(CardStoreTest, AddRefusesACardWhoseIdIsNotItsContent) {
  auto store = MakeStore(uint64_t{1} << 20);
  auto card = *BuildCard(*cache_, 12, absl::MakeConstSpan(ids_).first(12), CardEncoding::Full(),
                         ModelFingerprint{}, Provenance());
  std::vector<uint8_t> bytes(card->bytes().begin(), card->bytes().end());
  bytes[64] ^= 0x5a;  // another id, a valid header checksum: only the id check can tell
  SealHeaderChecksum(absl::MakeSpan(bytes).first(card->metadata().metadata_bytes));
  auto forged = *Card::Copy(bytes);
  absl::StatusOr<CardHandle> stored = store->Add(*forged);
  EXPECT_EQ(stored.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      stored.status().message(),
      HasSubstr("card id " + forged->id().ToHex() +
                " does not match its content (the content hashes to " + card->id().ToHex() + ")"));
  EXPECT_EQ(store->used_bytes(), 0u);
  EXPECT_TRUE(store->List().empty());
  EXPECT_FALSE(SegmentExists(PendingSegmentName(Instance(), 1)));
  EXPECT_FALSE(SegmentExists(store->SegmentName(forged->id())));
}

TEST_F(CardStoreTest, ImportFileStreamsAValidatedCard) {
  auto store = MakeStore(uint64_t{1} << 20);
  auto card = *BuildCard(*cache_, 30, absl::MakeConstSpan(ids_).first(30),
                         CardEncoding::Quantized(testing::UniformPlan(30, 3)), ModelFingerprint{},
                         Provenance());
  const std::string path = ::testing::TempDir() + "/store_import.qkvcard";
  ASSERT_TRUE(ExportCard(*card, path).ok());
  absl::StatusOr<CardHandle> stored = store->ImportFile(path);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ((*stored)->id(), card->id());
  EXPECT_TRUE(std::equal(card->bytes().begin(), card->bytes().end(), (*stored)->bytes().begin(),
                         (*stored)->bytes().end()));

  // A corrupt file leaves nothing behind.
  std::vector<uint8_t> bytes(card->bytes().begin(), card->bytes().end());
  bytes[bytes.size() - 1] ^= 4;
  bytes[64] = 0x77;  // another card id, so the name is free
  SealHeaderChecksum(absl::MakeSpan(bytes).first(card->metadata().metadata_bytes));
  {
    auto sink = *FileSink::Create(path);
    ASSERT_TRUE(sink->Begin(bytes.size()).ok());
    ASSERT_TRUE(sink->Write(0, bytes).ok());
    ASSERT_TRUE(sink->Finish().ok());
  }
  absl::StatusOr<CardHandle> bad = store->ImportFile(path);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(bad.status().message(), HasSubstr("checksum of segment 0 layer 4 V section"));
  CardId other = card->id();
  other.bytes[0] = 0x77;
  EXPECT_FALSE(SegmentExists(store->SegmentName(other)));
  EXPECT_FALSE(SegmentExists(PendingSegmentName(Instance(), 2)));
  EXPECT_EQ(store->List().size(), 1u);
}

// A ChunkReader over `bytes` in `chunk`-byte pieces, then `extra` more
// chunks of zeros (a stream longer than its card); counts its calls.
struct FakeStream {
  absl::Span<const uint8_t> bytes;
  size_t chunk = 4096;
  int extra = 0;
  size_t pos = 0;
  int reads = 0;
  std::function<void()> on_read;  // e.g. a memory sample
  bool Next(std::string* out) {
    ++reads;
    if (on_read) on_read();
    if (pos < bytes.size()) {
      const size_t n = std::min(chunk, bytes.size() - pos);
      out->assign(reinterpret_cast<const char*>(bytes.data() + pos), n);
      pos += n;
      return true;
    }
    if (extra-- > 0) {
      out->assign(chunk, '\0');
      return true;
    }
    return false;
  }
  CardStore::ChunkReader Reader() {
    return [this](std::string* out) { return Next(out); };
  }
};

TEST_F(CardStoreTest, ImportStreamStoresAValidatedCardChunkByChunk) {
  auto store = MakeStore(uint64_t{1} << 20);
  auto card = *BuildCard(*cache_, 30, absl::MakeConstSpan(ids_).first(30),
                         CardEncoding::Quantized(testing::UniformPlan(30, 3)), ModelFingerprint{},
                         Provenance());
  FakeStream stream{card->bytes(), 100};  // the header arrives in 4 chunks
  absl::StatusOr<CardHandle> stored = store->ImportStream(stream.Reader(), 1 << 20);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ((*stored)->id(), card->id());
  EXPECT_TRUE(std::equal(card->bytes().begin(), card->bytes().end(), (*stored)->bytes().begin(),
                         (*stored)->bytes().end()));
  EXPECT_EQ(stream.reads, static_cast<int>((card->bytes().size() + 99) / 100) + 1);

  // The same card again: dedup, one stored copy.
  FakeStream again{card->bytes(), 1 << 20};
  absl::StatusOr<CardHandle> second = store->ImportStream(again.Reader(), 1 << 20);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->get(), stored->get());
  EXPECT_EQ(store->List().size(), 1u);
}

TEST_F(CardStoreTest, ImportStreamRejectsABadHeaderAfterItsFirstChunk) {
  auto store = MakeStore(uint64_t{1} << 20);
  auto card = *BuildCard(*cache_, 30, absl::MakeConstSpan(ids_).first(30),
                         CardEncoding::Quantized(testing::UniformPlan(30, 3)), ModelFingerprint{},
                         Provenance());
  // 300 MiB of zeros would follow: only the first chunk is read.
  const std::vector<uint8_t> zeros(4096, 0);
  FakeStream garbage{zeros, 4096, 300 * 256};
  absl::StatusOr<CardHandle> bad = store->ImportStream(garbage.Reader(), uint64_t{1} << 40);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("not a CacheCard: magic is 0x00000000"));
  EXPECT_EQ(garbage.reads, 1);

  // Magic split over chunks: rejected as soon as its 4 bytes are in.
  const std::vector<uint8_t> qkx = {'Q', 'K', 'X', 'C', 0, 0, 0, 0};
  FakeStream split{qkx, 2, 1000};
  EXPECT_EQ(store->ImportStream(split.Reader(), 1 << 20).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(split.reads, 2);

  // Another format version.
  std::vector<uint8_t> v99(card->bytes().begin(), card->bytes().end());
  v99[4] = 99;
  FakeStream version{v99, 512};
  EXPECT_EQ(store->ImportStream(version.Reader(), 1 << 20).status().code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(version.reads, 1);

  // A declared size over the caller's limit or the quota: nothing more is read.
  FakeStream big{card->bytes(), 512};
  absl::StatusOr<CardHandle> over = store->ImportStream(big.Reader(), 1024);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.status().message(), HasSubstr("the limit is 1024"));
  EXPECT_EQ(big.reads, 1);
  EXPECT_TRUE(store->List().empty());
}

TEST_F(CardStoreTest, ImportStreamQuotaIsCheckedBeforeTheSections) {
  CardStoreOptions options;
  options.instance = Instance();
  options.quota_bytes = 1024;
  auto store = *CardStore::Create(options);
  auto card = *BuildCard(*cache_, 30, absl::MakeConstSpan(ids_).first(30),
                         CardEncoding::Quantized(testing::UniformPlan(30, 3)), ModelFingerprint{},
                         Provenance());
  ASSERT_GT(card->bytes().size(), 1024u);
  FakeStream stream{card->bytes(), 512};
  absl::StatusOr<CardHandle> over = store->ImportStream(stream.Reader(), 1 << 20);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.status().message(), HasSubstr("exceeds the store quota"));
  EXPECT_EQ(stream.reads, 1);
  EXPECT_FALSE(SegmentExists(PendingSegmentName(Instance(), 1)));
}

TEST_F(CardStoreTest, ImportStreamCutsOffLongShortAndCorruptStreamsLeavingNothing) {
  auto store = MakeStore(uint64_t{1} << 20);
  auto card = *BuildCard(*cache_, 30, absl::MakeConstSpan(ids_).first(30),
                         CardEncoding::Quantized(testing::UniformPlan(30, 3)), ModelFingerprint{},
                         Provenance());
  const size_t n = card->bytes().size();
  // Longer than declared: cut off at the first chunk past the end.
  FakeStream longer{card->bytes(), 1000, 1 << 20};
  absl::StatusOr<CardHandle> bad = store->ImportStream(longer.Reader(), 1 << 20);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("runs past the declared card_bytes"));
  EXPECT_EQ(longer.reads, static_cast<int>((n + 999) / 1000) + 1);
  // Shorter.
  FakeStream shorter{card->bytes().first(n - 10), 1000};
  bad = store->ImportStream(shorter.Reader(), 1 << 20);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("ended after"));
  // Corrupt metadata: refused once the metadata is in, before the sections.
  std::vector<uint8_t> meta(card->bytes().begin(), card->bytes().end());
  meta[card->metadata().metadata_bytes - 1] ^= 1;
  FakeStream corrupt_meta{meta, 64};
  bad = store->ImportStream(corrupt_meta.Reader(), 1 << 20);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(bad.status().message(), HasSubstr("header checksum"));
  EXPECT_EQ(corrupt_meta.reads, static_cast<int>((card->metadata().metadata_bytes + 63) / 64));
  // A corrupt section: found after the last chunk.
  std::vector<uint8_t> flipped(card->bytes().begin(), card->bytes().end());
  flipped[n - 1] ^= 4;
  FakeStream corrupt{flipped, 1000};
  bad = store->ImportStream(corrupt.Reader(), 1 << 20);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(bad.status().message(), HasSubstr("checksum"));
  // A forged id (metadata resealed): refused after the last chunk.
  std::vector<uint8_t> forged(card->bytes().begin(), card->bytes().end());
  forged[offsetof(CardHeader, card_id)] ^= 0x5a;
  SealHeaderChecksum(absl::MakeSpan(forged).first(card->metadata().metadata_bytes));
  FakeStream forged_stream{forged, 1000};
  bad = store->ImportStream(forged_stream.Reader(), 1 << 20);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  // Nothing stored, no segment left, no quota held.
  EXPECT_TRUE(store->List().empty());
  EXPECT_EQ(store->used_bytes(), 0u);
  for (uint64_t i = 1; i <= 6; ++i) {
    EXPECT_FALSE(SegmentExists(PendingSegmentName(Instance(), i))) << i;
  }
  FakeStream good{card->bytes(), 1000};
  EXPECT_TRUE(store->ImportStream(good.Reader(), 1 << 20).ok());
}

// Resident anonymous memory of this process (heap, not the shm segments).
int64_t RssAnonKiB() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return -1;
  char line[256];
  int64_t kib = -1;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::sscanf(line, "RssAnon: %ld kB", &kib) == 1) break;
  }
  std::fclose(f);
  return kib;
}

TEST_F(CardStoreTest, ImportStreamHeapStaysNearTheChunkSize) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "sanitizer shadow memory of the segment counts as anonymous memory";
#endif
  // A 64 MiB card (full precision), streamed in 1 MiB chunks.
  constexpr agents::KvShape kBig{8, 8, 64};
  constexpr int64_t kTokens = 2048;
  auto cache = *testing::MakeSyntheticCache(kBig, DType::kF32, kTokens, 3);
  std::vector<int32_t> ids(kTokens);
  std::iota(ids.begin(), ids.end(), 7);
  auto card =
      *BuildCard(*cache, kTokens, ids, CardEncoding::Full(), ModelFingerprint{}, Provenance());
  ASSERT_GE(card->bytes().size(), uint64_t{64} << 20);
  auto store = MakeStore(uint64_t{1} << 30);
  FakeStream stream{card->bytes(), 1 << 20};
  std::string warm;
  stream.Next(&warm);  // the chunk buffer's first allocation, as a reader's
  stream.pos = 0;
  const int64_t before = RssAnonKiB();
  ASSERT_GT(before, 0);
  int64_t peak = before;
  stream.on_read = [&] { peak = std::max(peak, RssAnonKiB()); };
  absl::StatusOr<CardHandle> stored = store->ImportStream(stream.Reader(), uint64_t{1} << 30);
  ASSERT_TRUE(stored.ok()) << stored.status();
  peak = std::max(peak, RssAnonKiB());
  // Buffering the card would add 64 MiB; chunks and the metadata are ~1 MiB.
  EXPECT_LT(peak - before, 16 * 1024) << "peak RssAnon grew by " << (peak - before) << " KiB";
}

TEST_F(CardStoreTest, ConcurrentBuildsGetsAndReleasesRespectTheQuota) {
  const uint64_t bytes = CardBytes();
  auto store = MakeStore(4 * bytes);
  std::atomic<int> built{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        absl::StatusOr<CardHandle> h = Build(store.get(), static_cast<uint8_t>(1 + t * 10 + i));
        EXPECT_TRUE(h.ok()) << "thread " << t << " card " << i << ": " << h.status();
        if (h.ok()) {
          ++built;
          EXPECT_TRUE(store->Get((*h)->id()).ok());
        }
        EXPECT_LE(store->used_bytes(), 4 * bytes);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(built.load(), 40);  // each holds at most one handle at a time
  EXPECT_LE(store->List().size(), 4u);
}

}  // namespace
}  // namespace qkvshare::cachecard::shm

// File: cachecard/shm/card_store.h
// -----------------------------------------------------------------------------
// CardStore: the daemon's cards, one POSIX shared-memory segment each
// (cachecard/shm/shm_segment.h), written once and then mapped read-only, so
// injection reads them in place and other local processes can open them by
// name (OpenSharedCard(store.SegmentName(id))).
//
// Identity and dedup (docs/cachecard.md "Card id"): a card's id is derived
// from its content. Storing a card whose id is already stored returns the
// stored one (another handle, no second copy) when the two hold the same
// content (SameContent); a card from outside (Add, ImportFile) is refused
// if its id does not match its content. Get() checks the model fingerprint
// and a token digest the caller expects (CardExpectation).
//
// Lifetime rules (docs/cachecard.md "Shared-memory card store"):
//   1. A card in use is never evicted: every CardHandle holds a reference.
//   2. A child card pins its parent: storing an incremental card requires its
//      parent to be stored and adds a reference to the parent, dropped when
//      the child leaves the store. A chain stays resolvable while any
//      descendant lives, so Find() (CardResolver) of an ancestor of a card
//      the caller holds a handle to is always safe.
//   3. A pinned card (Pin(), e.g. a session's kept card or an agent's prefix
//      card) is not evicted until its pin expires or it is removed.
//   4. A byte quota (sum of card_bytes) is enforced when a card is stored,
//      by evicting unreferenced, unpinned cards: first those no queued,
//      running or paused task needs (CardNeed), least recently used first
//      (store or Get counts as use), then needed ones, least recently used
//      first; if that is not enough, ResourceExhausted.
//   5. With a TTL, unreferenced, unpinned, unneeded cards created more than
//      `ttl` ago are evicted by a timer (every `expiry_period`, without any
//      store traffic), at the next store operation and under pressure. The
//      cards are kept in creation order, so a pass costs O(log n) per card it
//      looks at, never a rescan of the store.
//   6. When the segment of a new card cannot be allocated (/dev/shm full:
//      ENOSPC, even within the quota), unreferenced cards are evicted by rule
//      4's order until the card's size is freed, and the allocation is tried
//      once more; if that fails too, ResourceExhausted (the caller falls
//      back, e.g. to re-prefill).
//
// Lifecycle: Create() takes the instance lock (one live store per instance
// name, across processes) and removes segments left by a crashed store of
// the same instance. REQUIRES: every CardHandle is destroyed before the
// store. The destructor unlinks all segments.
//
// Thread safety: thread-safe. Cards are immutable; a CardHandle may be used
// from any thread, one handle object by one thread at a time.
//
// Example:
//   CardStoreOptions options;
//   options.instance = "main";
//   options.quota_bytes = uint64_t{1} << 30;
//   QKV_ASSIGN_OR_RETURN(std::unique_ptr<CardStore> store, CardStore::Create(options));
//   QKV_ASSIGN_OR_RETURN(CardHandle card,
//       store->Build(cache, n, ids, CardEncoding::Quantized(plan), fp, prov, nullptr));
//   ... hand card->id() to the next agent ...
//   QKV_ASSIGN_OR_RETURN(CardHandle got, store->Get(id, {&fp}));
//   QKV_RETURN_IF_ERROR(InjectCard(*got, store.get(), fp, &their_cache));
#ifndef QKVSHARE_CACHECARD_SHM_CARD_STORE_H_
#define QKVSHARE_CACHECARD_SHM_CARD_STORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agents/kv_cache.h"
#include "cachecard/build.h"
#include "cachecard/card.h"
#include "cachecard/chain.h"
#include "cachecard/content_id.h"
#include "cachecard/ids.h"
#include "cachecard/io.h"
#include "cachecard/shm/shm_segment.h"

namespace qkvshare::cachecard::shm {

struct CardStoreOptions {
  // Daemon instance name, [A-Za-z0-9_-]{1,64}: segments are
  // /qkvshare.<instance>.<card id>. Required.
  std::string instance;
  // Upper bound on the sum of card_bytes of stored cards. Default 1 GiB.
  uint64_t quota_bytes = uint64_t{1} << 30;
  // Unreferenced cards older than this are evicted; zero: no TTL.
  absl::Duration ttl = absl::ZeroDuration();
  // With a TTL, how often a background thread evicts expired cards (rule 5);
  // zero: no thread, expiry only at store operations (tests with a fake
  // `clock` use that).
  absl::Duration expiry_period = absl::Milliseconds(250);
  // Directory of the instance lock (InstanceLock): the daemon uses its
  // runtime directory next to the socket, which other users cannot write;
  // empty: /dev/shm, where any local user could squat the name.
  std::string lock_dir;
  // Time source (tests inject one). Default absl::Now.
  std::function<absl::Time()> clock;
  // Sizes and commits a new segment's memory (ShmSegmentSink::Begin);
  // ResourceExhausted means /dev/shm is full (rule 6). Tests inject a full
  // file system here. Default: segment.Begin(bytes).
  std::function<absl::Status(ShmSegmentSink& segment, uint64_t bytes)> allocate;
  // Called once per card dropped by quota (LRU), TTL or ENOSPC eviction (not for
  // Remove()), with the store's lock held: it must be quick and must not
  // call back into the store. May be empty.
  std::function<void(const CardId&)> on_evict;
};

class CardStore;

// A reference to a stored card: keeps it (and, through rule 2, its parent
// chain) in the store while alive. Movable, not copyable. Hold it for the
// duration of an injection or a task, not longer. Releasing it counts as a
// use of the card (rule 4's order) unless it came from CardStore::Peek().
class CardHandle {
 public:
  CardHandle() = default;
  CardHandle(CardHandle&& other) noexcept;
  CardHandle& operator=(CardHandle&& other) noexcept;
  CardHandle(const CardHandle&) = delete;
  CardHandle& operator=(const CardHandle&) = delete;
  ~CardHandle();

  explicit operator bool() const { return card_ != nullptr; }
  // REQUIRES: *this holds a card.
  const Card& operator*() const { return *card_; }
  const Card* operator->() const { return card_; }
  const Card* get() const { return card_; }

 private:
  friend class CardStore;
  CardHandle(CardStore* store, const Card* card, bool use = true)
      : store_(store), card_(card), use_(use) {}
  void Reset();

  CardStore* store_ = nullptr;
  const Card* card_ = nullptr;
  bool use_ = true;  // release counts as a use (false: from Peek())
};

// A soft reference: a card a queued, running or paused task will need later
// (e.g. its context card, an agent's prefix card). Unlike a CardHandle it
// does not keep the card from eviction; it moves the card to the back of the
// eviction order (rule 4). Movable, not copyable.
class CardNeed {
 public:
  CardNeed() = default;
  CardNeed(CardNeed&& other) noexcept;
  CardNeed& operator=(CardNeed&& other) noexcept;
  CardNeed(const CardNeed&) = delete;
  CardNeed& operator=(const CardNeed&) = delete;
  ~CardNeed();

  explicit operator bool() const { return store_ != nullptr; }
  const CardId& id() const { return id_; }

 private:
  friend class CardStore;
  CardNeed(CardStore* store, const CardId& id) : store_(store), id_(id) {}
  void Reset();

  CardStore* store_ = nullptr;
  CardId id_;
};

// What a lookup by id expects of the card (each part optional). A stored
// card that differs is an error, never a silent use.
struct CardExpectation {
  const ModelFingerprint* fingerprint = nullptr;  // the consumer's model
  const Sha256* token_digest = nullptr;           // DigestTokens of its whole context
};

// One row of CardStore::List().
struct StoredCardInfo {
  CardId id;
  CardId parent_id;     // zero for a self-contained card
  std::string segment;  // shm_open name
  uint64_t bytes = 0;   // card_bytes
  int64_t first_token = 0;
  int64_t total_tokens = 0;
  double avg_bits = 0;
  int handles = 0;      // live CardHandles
  int children = 0;     // stored cards whose parent this is
  absl::Duration age;   // since stored
  absl::Duration idle;  // since last use
  int needs = 0;        // live CardNeeds
  // Pinned (rule 3) until this time; InfinitePast() if not pinned,
  // InfiniteFuture() if pinned without a deadline.
  absl::Time pinned_until = absl::InfinitePast();
};

class CardStore final : public CardResolver {
 public:
  // Errors: InvalidArgument (instance name, zero quota); FailedPrecondition
  // if a live store of this instance exists (in any process); others from
  // the shm file system.
  static absl::StatusOr<std::unique_ptr<CardStore>> Create(CardStoreOptions options);
  ~CardStore() override;

  // What Put() checks of the written card.
  enum class IdCheck {
    kVerify,     // a card from outside, validated while copied (CopyCard): refuse it if
                 // its id is not its content's
    kVerifyAll,  // raw bytes from outside (ImportStream): also every section checksum and
                 // the padding, read back from the segment once written
    kTrusted,    // a card this process just wrote with BuildCard/Flatten (id derived while
                 // writing)
  };

  // Stores the card `write` produces through a sink backed by a new segment
  // (zero copy: builders encode straight into shared memory); once written,
  // the segment is renamed SegmentName(card id). Its bytes count against the
  // quota from the sink's Begin(card_bytes) on; the store parses the result
  // once. If a card with that id is already stored and holds the same
  // content, the new copy is dropped and a handle to the stored card is
  // returned (dedup).
  // Errors: from `write`; ResourceExhausted (quota with every card in use or
  // pinned, or /dev/shm full); InvalidArgument (kVerify and the id does not
  // match the content); AlreadyExists (the id is stored with other content:
  // a hash collision); NotFound (an incremental card whose parent is not
  // stored). Nothing is stored on error.
  // REQUIRES: a parent card `write` reads is pinned by the caller (a handle).
  using WriteFn = std::function<absl::Status(CardSink& sink)>;
  absl::StatusOr<CardHandle> Put(const WriteFn& write, IdCheck check);

  // BuildCard (cachecard/build.h) straight into the store (its id is
  // content-derived; an existing equal card is returned instead). `parent`,
  // if any, must be a stored card the caller holds a handle to.
  absl::StatusOr<CardHandle> Build(const agents::KvCache& cache, int64_t num_tokens,
                                   absl::Span<const int32_t> token_ids,
                                   const CardEncoding& encoding,
                                   const ModelFingerprint& fingerprint,
                                   const Provenance& provenance, const Card* parent);
  // Copies an existing card (e.g. imported from a file) into the store,
  // validating it and its id on the way (Put with kVerify).
  absl::StatusOr<CardHandle> Add(const Card& card);

  // Streams the card file at `path` (.qkvcard) into the store, validating
  // while reading (CopyCard), without holding it in memory.
  // Errors: from the file system, CopyCard and Put.
  absl::StatusOr<CardHandle> ImportFile(const std::string& path);

  // Next chunk of a streamed card file into `*chunk` (replacing its
  // contents); false at the end of the stream. Called from the importing
  // thread only; it may block.
  using ChunkReader = std::function<bool(std::string* chunk)>;

  // Stores the card file (.qkvcard) arriving in chunks from `next` without
  // holding it in memory: the header is checked as soon as its bytes arrive
  // (normally the first chunk: magic, version, declared card_bytes <=
  // `max_card_bytes` and within the quota), then every chunk is written
  // straight into the new segment, and a stream running past the declared
  // size is cut off at that chunk (no further reads). The metadata is
  // checked once complete; after the last chunk the whole card (checksums,
  // padding) and its id are verified in place, then dedup as in Put().
  // Errors: InvalidArgument (not a card, wrong size, stream longer or shorter
  // than declared), Unimplemented (format version), DataLoss (corrupt
  // metadata, checksums), ResourceExhausted (over `max_card_bytes` or the
  // quota), and those of Put(). On error nothing is stored and the segment
  // is gone.
  absl::StatusOr<CardHandle> ImportStream(const ChunkReader& next, uint64_t max_card_bytes);

  // A handle to stored card `id` after checking it against `expect`.
  // Errors: NotFound; FailedPrecondition "fingerprint" / "token digest" if
  // the card is for another model or holds another context than expected.
  absl::StatusOr<CardHandle> Get(const CardId& id, const CardExpectation& expect = {});

  // A handle to stored card `id` for reading it without using it: listings
  // and inspection (the daemon's ListCards). Like Get() it keeps the card,
  // and its parent chain, stored while held, so another thread (the expiry
  // timer, a quota eviction, Remove()) cannot drop it under the reader; unlike
  // Get() neither taking nor releasing it counts as a use (LRU order and
  // StoredCardInfo::idle unchanged) and no expiry pass runs. A card pointer
  // from Find() or List() without such a handle may be dropped at any time.
  // Errors: NotFound.
  absl::StatusOr<CardHandle> Peek(const CardId& id);

  // Marks stored card `id` as needed by a task (rule 4) while the returned
  // object lives. Errors: NotFound.
  absl::StatusOr<CardNeed> Need(const CardId& id);

  // Pins stored card `id` until `until` (InfiniteFuture: until removed),
  // replacing an earlier pin. Errors: NotFound.
  absl::Status Pin(const CardId& id, absl::Time until);

  // CardResolver: the stored card with `id`, or null. The pointer stays
  // valid while the caller holds a handle to that card or to a descendant.
  const Card* Find(const CardId& id) const override;

  // Drops an unreferenced card now, pinned or not. Errors: NotFound;
  // FailedPrecondition if it has handles or stored children.
  absl::Status Remove(const CardId& id);

  // Evicts unreferenced cards past the TTL (also done by the timer, Put and
  // Get).
  void EvictExpired();

  // Every stored card, least recently used first.
  std::vector<StoredCardInfo> List() const;

  // What Create() removed (or left alone) of a previous store of this
  // instance: for the start-up log.
  const StaleSegments& stale_at_start() const { return stale_at_start_; }

  uint64_t used_bytes() const;
  uint64_t quota_bytes() const { return options_.quota_bytes; }
  std::string SegmentName(const CardId& id) const {
    return shm::SegmentName(options_.instance, id);
  }

 private:
  struct Entry {
    CardPtr card;  // read-only mapping of the segment
    std::string segment;
    uint64_t bytes = 0;
    int handles = 0;
    int children = 0;
    int needs = 0;
    absl::Time pinned_until = absl::InfinitePast();
    absl::Time stored;
    std::multimap<absl::Time, CardId>::iterator by_stored;  // in by_stored_
    absl::Time last_used;
    uint64_t use_order = 0;  // LRU tie-break: bigger is more recent
  };
  class StoreSink;
  friend class CardHandle;
  friend class CardNeed;

  CardStore(CardStoreOptions options, std::unique_ptr<InstanceLock> lock)
      : options_(std::move(options)), lock_(std::move(lock)) {}

  absl::Time Now() const { return options_.clock ? options_.clock() : absl::Now(); }
  // Makes room for `bytes` more (evicting LRU unreferenced cards) and
  // reserves them. Errors: ResourceExhausted.
  absl::Status Reserve(uint64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  void Unreserve(uint64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  // Drops a handle's reference; `use`: it counts as a use (Touch).
  void Release(const Card* card, bool use) ABSL_LOCKS_EXCLUDED(mu_);
  void ReleaseNeed(const CardId& id) ABSL_LOCKS_EXCLUDED(mu_);
  // Whether rule 4 may evict `entry` now (unreferenced, no children, not pinned).
  bool Evictable(const Entry& entry, absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stores the sealed `card` (written to segment `pending`) under its id,
  // or returns the stored equal card. Takes over `card`'s bytes reservation.
  absl::StatusOr<CardHandle> Insert(CardPtr card, const std::string& pending)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Touch(Entry* entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Unlinks and drops `id` (unreferenced), releasing its pin on its parent.
  void Drop(const CardId& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops one card by rule 4's order; false if none may be evicted.
  bool EvictOne() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EvictExpiredLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether rule 5 drops `entry` at `now`.
  bool Expired(const Entry& entry, absl::Time now) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sizes `segment` (options_.allocate), evicting unreferenced cards and
  // retrying once when /dev/shm is full (rule 6).
  absl::Status AllocateSegment(ShmSegmentSink& segment, uint64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);
  // The timer of rule 5: runs until stopping_.
  void ExpiryLoop() ABSL_LOCKS_EXCLUDED(mu_);

  const CardStoreOptions options_;
  const std::unique_ptr<InstanceLock> lock_;
  StaleSegments stale_at_start_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<CardId, std::unique_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
  uint64_t used_bytes_ ABSL_GUARDED_BY(mu_) = 0;      // stored cards
  uint64_t reserved_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // cards being written
  uint64_t use_counter_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pending_counter_ ABSL_GUARDED_BY(mu_) = 0;
  // Every entry by creation time (rule 5's order).
  std::multimap<absl::Time, CardId> by_stored_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread expiry_thread_;  // runs ExpiryLoop with a TTL and an expiry_period
};

}  // namespace qkvshare::cachecard::shm

#endif  // QKVSHARE_CACHECARD_SHM_CARD_STORE_H_

#include "cachecard/shm/card_store.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "cachecard/card_file.h"
#include "cachecard/content_id.h"
#include "cachecard/file_io.h"
#include "cachecard/format.h"
#include "cachecard/metadata_codec.h"

namespace qkvshare::cachecard::shm {

// The segment sink, reserving quota when the card's size is known.
class CardStore::StoreSink final : public CardSink {
 public:
  StoreSink(CardStore* store, ShmSegmentSink* segment) : store_(store), segment_(segment) {}
  ~StoreSink() override {
    if (reserved_ > 0) store_->Unreserve(reserved_);
  }
  absl::Status Begin(uint64_t card_bytes) override {
    QKV_RETURN_IF_ERROR(store_->Reserve(card_bytes));
    reserved_ = card_bytes;
    return store_->AllocateSegment(*segment_, card_bytes);
  }
  absl::Span<uint8_t> Window(uint64_t offset, uint64_t bytes) override {
    return segment_->Window(offset, bytes);
  }
  absl::Status Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    return segment_->Write(offset, data);
  }
  absl::Status Finish() override { return segment_->Finish(); }
  // Turns the reservation into `bytes` of stored bytes; the caller holds the
  // store's mu_, so no other thread sees the card counted twice (reserved
  // and stored) or not at all.
  void CommitReservationLocked(uint64_t bytes) {
    store_->reserved_bytes_ -= reserved_;
    reserved_ = 0;
    store_->used_bytes_ += bytes;
  }

 private:
  CardStore* store_;
  ShmSegmentSink* segment_;
  uint64_t reserved_ = 0;
};

CardHandle::CardHandle(CardHandle&& other) noexcept
    : store_(std::exchange(other.store_, nullptr)),
      card_(std::exchange(other.card_, nullptr)),
      use_(other.use_) {}

CardHandle& CardHandle::operator=(CardHandle&& other) noexcept {
  if (this != &other) {
    Reset();
    store_ = std::exchange(other.store_, nullptr);
    card_ = std::exchange(other.card_, nullptr);
    use_ = other.use_;
  }
  return *this;
}

CardHandle::~CardHandle() { Reset(); }

void CardHandle::Reset() {
  if (store_ != nullptr && card_ != nullptr) store_->Release(card_, use_);
  store_ = nullptr;
  card_ = nullptr;
}

CardNeed::CardNeed(CardNeed&& other) noexcept
    : store_(std::exchange(other.store_, nullptr)), id_(other.id_) {}

CardNeed& CardNeed::operator=(CardNeed&& other) noexcept {
  if (this != &other) {
    Reset();
    store_ = std::exchange(other.store_, nullptr);
    id_ = other.id_;
  }
  return *this;
}

CardNeed::~CardNeed() { Reset(); }

void CardNeed::Reset() {
  if (store_ != nullptr) store_->ReleaseNeed(id_);
  store_ = nullptr;
}

absl::StatusOr<std::unique_ptr<CardStore>> CardStore::Create(CardStoreOptions options) {
  QKV_RETURN_IF_ERROR(ValidateInstanceName(options.instance));
  if (options.quota_bytes == 0) return absl::InvalidArgumentError("CardStore: quota_bytes is 0");
  if (options.ttl < absl::ZeroDuration() || options.expiry_period < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("CardStore: negative ttl or expiry_period");
  }
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<InstanceLock> lock,
                       InstanceLock::Acquire(options.instance, options.lock_dir));
  QKV_ASSIGN_OR_RETURN(StaleSegments stale, RemoveInstanceSegments(options.instance));
  std::unique_ptr<CardStore> store(new CardStore(std::move(options), std::move(lock)));
  store->stale_at_start_ = std::move(stale);
  if (store->options_.ttl > absl::ZeroDuration() &&
      store->options_.expiry_period > absl::ZeroDuration()) {
    CardStore* raw = store.get();
    store->expiry_thread_ = std::thread([raw] { raw->ExpiryLoop(); });
  }
  return store;
}

CardStore::~CardStore() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (expiry_thread_.joinable()) expiry_thread_.join();
  absl::MutexLock lock(&mu_);
  for (const auto& [id, entry] : entries_) ::shm_unlink(entry->segment.c_str());
  entries_.clear();
}

absl::Status CardStore::Reserve(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  if (bytes > options_.quota_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "card of ", bytes, " bytes exceeds the store quota of ", options_.quota_bytes, " bytes"));
  }
  if (used_bytes_ + reserved_bytes_ + bytes > options_.quota_bytes) EvictExpiredLocked();
  while (used_bytes_ + reserved_bytes_ + bytes > options_.quota_bytes) {
    if (!EvictOne()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "card store full: ", used_bytes_, " bytes in ", entries_.size(), " cards in use (and ",
          reserved_bytes_, " being written), quota ", options_.quota_bytes, ", need ", bytes));
    }
  }
  reserved_bytes_ += bytes;
  return absl::OkStatus();
}

absl::Status CardStore::AllocateSegment(ShmSegmentSink& segment, uint64_t bytes) {
  auto allocate = [&] {
    return options_.allocate ? options_.allocate(segment, bytes) : segment.Begin(bytes);
  };
  absl::Status first = allocate();
  if (first.code() != absl::StatusCode::kResourceExhausted) return first;
  // /dev/shm is full (other users of it, a tmpfs smaller than the quota):
  // make room with unreferenced cards, then try once more.
  int evicted = 0;
  uint64_t freed = 0;
  {
    absl::MutexLock lock(&mu_);
    const uint64_t before = used_bytes_;
    EvictExpiredLocked();
    while (before - used_bytes_ < bytes && EvictOne()) ++evicted;
    freed = before - used_bytes_;
  }
  absl::Status second = allocate();
  if (second.ok()) return second;
  return absl::Status(second.code(),
                      absl::StrCat(second.message(), " (retried once after evicting ", evicted,
                                   " unreferenced cards, ", freed, " bytes)"));
}

void CardStore::Unreserve(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  reserved_bytes_ -= bytes;
}

void CardStore::Touch(Entry* entry) {
  entry->last_used = Now();
  entry->use_order = ++use_counter_;
}

absl::StatusOr<CardHandle> CardStore::Put(const WriteFn& write, IdCheck check) {
  uint64_t n = 0;
  {
    absl::MutexLock lock(&mu_);
    EvictExpiredLocked();
    n = ++pending_counter_;
  }
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<ShmSegmentSink> segment,
                       ShmSegmentSink::Create(PendingSegmentName(options_.instance, n)));
  const std::string pending = segment->name();
  CardPtr card;
  {
    StoreSink sink(this, segment.get());  // releases its reservation when done
    QKV_RETURN_IF_ERROR(write(sink));
    QKV_ASSIGN_OR_RETURN(card,
                         segment->Seal(check == IdCheck::kVerifyAll ? Card::Verify::kAll
                                                                    : Card::Verify::kMetadataOnly));
    // The reservation becomes stored bytes under one lock: a concurrent
    // Reserve() saw the card's bytes twice when the stored bytes were added
    // here and the reservation dropped afterwards (by ~StoreSink): spurious
    // "card store full" (card_store_test's concurrent quota test, under ASan).
    absl::MutexLock lock(&mu_);
    sink.CommitReservationLocked(card->bytes().size());
  }
  absl::Status verified = check != IdCheck::kTrusted ? VerifyContentId(*card) : absl::OkStatus();
  absl::MutexLock lock(&mu_);
  if (!verified.ok()) {
    used_bytes_ -= card->bytes().size();
    ::shm_unlink(pending.c_str());
    return verified;
  }
  return Insert(std::move(card), pending);
}

absl::StatusOr<CardHandle> CardStore::Insert(CardPtr card, const std::string& pending) {
  const CardId id = card->id();
  const CardMetadata& m = card->metadata();
  auto undo = [&](absl::Status s) {
    used_bytes_ -= card->bytes().size();
    ::shm_unlink(pending.c_str());
    return s;
  };
  if (auto it = entries_.find(id); it != entries_.end()) {
    Entry& stored = *it->second;
    if (!SameContent(*stored.card, *card)) {
      return undo(absl::AlreadyExistsError(
          absl::StrCat("card ", id.ToHex(), " is stored with other content (an id collision)")));
    }
    (void)undo(absl::OkStatus());  // dedup: drop the new copy, hand out the stored card
    ++stored.handles;
    Touch(&stored);
    return CardHandle(this, stored.card.get());
  }
  if (m.first_token > 0 && !entries_.contains(m.parent_id)) {
    return undo(absl::NotFoundError(absl::StrCat("parent card ", m.parent_id.ToHex(), " of card ",
                                                 id.ToHex(), " is not stored")));
  }
  const std::string name = SegmentName(id);
  if (absl::Status renamed = RenameSegment(pending, name); !renamed.ok()) return undo(renamed);
  if (m.first_token > 0) ++entries_[m.parent_id]->children;
  auto entry = std::make_unique<Entry>();
  entry->segment = name;
  entry->bytes = card->bytes().size();
  entry->handles = 1;
  entry->stored = Now();
  entry->by_stored = by_stored_.emplace(entry->stored, id);
  Touch(entry.get());
  const Card* raw = card.get();
  entry->card = std::move(card);
  entries_[id] = std::move(entry);
  return CardHandle(this, raw);
}

absl::StatusOr<CardHandle> CardStore::Build(const agents::KvCache& cache, int64_t num_tokens,
                                            absl::Span<const int32_t> token_ids,
                                            const CardEncoding& encoding,
                                            const ModelFingerprint& fingerprint,
                                            const Provenance& provenance, const Card* parent) {
  return Put(
      [&](CardSink& sink) {
        return WriteCard(cache, num_tokens, token_ids, encoding, fingerprint, provenance, parent,
                         sink)
            .status();
      },
      IdCheck::kTrusted);
}

absl::StatusOr<CardHandle> CardStore::Add(const Card& card) {
  return Put(
      [&](CardSink& sink) {
        BufferSource source(card.bytes());
        return CopyCard(source, sink).status();
      },
      IdCheck::kVerify);
}

absl::StatusOr<CardHandle> CardStore::ImportFile(const std::string& path) {
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<FileSource> source, FileSource::Open(path));
  absl::StatusOr<CardHandle> handle =
      Put([&](CardSink& sink) { return CopyCard(*source, sink).status(); }, IdCheck::kVerify);
  if (!handle.ok()) {
    return absl::Status(handle.status().code(),
                        absl::StrCat(path, ": ", handle.status().message()));
  }
  return handle;
}

namespace {

// The card_bytes a streamed card's first bytes declare, once its header is
// complete; zero while more bytes are needed. Magic and version are checked
// as soon as their bytes are here (ReadPreamble checks them before it finds
// the prefix short, which it reports as DataLoss "truncated").
absl::StatusOr<uint64_t> DeclaredCardBytes(absl::Span<const uint8_t> head,
                                           uint64_t max_card_bytes) {
  if (head.empty()) return 0;
  const absl::Span<const uint8_t> early = head.first(std::min(head.size(), sizeof(CardHeader) - 1));
  if (absl::Status s = ReadPreamble(early, early.size()).status();
      s.code() != absl::StatusCode::kDataLoss) {
    return s;  // never OK: `early` is shorter than a header
  }
  if (head.size() < sizeof(CardHeader)) return 0;
  uint64_t declared = 0;
  std::memcpy(&declared, head.data() + offsetof(CardHeader, card_bytes), sizeof declared);
  if (declared > max_card_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the card declares ", declared, " bytes; the limit is ", max_card_bytes));
  }
  QKV_RETURN_IF_ERROR(ReadPreamble(head, declared).status());
  return declared;
}

}  // namespace

absl::StatusOr<CardHandle> CardStore::ImportStream(const ChunkReader& next,
                                                   uint64_t max_card_bytes) {
  std::string head, chunk;
  uint64_t declared = 0;
  int64_t chunks = 0;
  auto span = [](const std::string& s) {
    return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  while (declared == 0) {
    if (!next(&chunk)) {
      return absl::InvalidArgumentError(
          head.empty() ? std::string("empty card stream")
                       : absl::StrCat("card stream ended after ", head.size(),
                                      " bytes, inside the ", sizeof(CardHeader), "-byte header"));
    }
    ++chunks;
    if (head.empty()) {
      head.swap(chunk);
    } else {
      head += chunk;
    }
    QKV_ASSIGN_OR_RETURN(declared, DeclaredCardBytes(span(head), max_card_bytes));
  }
  uint64_t metadata_bytes = 0;
  std::memcpy(&metadata_bytes, head.data() + offsetof(CardHeader, metadata_bytes),
              sizeof metadata_bytes);

  return Put(
      [&](CardSink& sink) -> absl::Status {
        QKV_RETURN_IF_ERROR(sink.Begin(declared));  // the quota, before more is read
        uint64_t written = 0;
        bool metadata_checked = false;
        auto take = [&](absl::Span<const uint8_t> data) -> absl::Status {
          if (data.size() > declared - written) {
            return absl::InvalidArgumentError(
                absl::StrCat("card stream runs past the declared card_bytes ", declared, ": chunk ",
                             chunks, " ends at byte ", written + data.size()));
          }
          QKV_RETURN_IF_ERROR(sink.Write(written, data));
          written += data.size();
          if (!metadata_checked && written >= metadata_bytes) {
            metadata_checked = true;  // checked in place, before the sections arrive
            absl::Span<uint8_t> window = sink.Window(0, metadata_bytes);
            if (!window.empty()) QKV_RETURN_IF_ERROR(ParseMetadata(window, declared).status());
          }
          return absl::OkStatus();
        };
        QKV_RETURN_IF_ERROR(take(span(head)));
        std::string().swap(head);
        while (next(&chunk)) {
          ++chunks;
          QKV_RETURN_IF_ERROR(take(span(chunk)));
        }
        if (written < declared) {
          return absl::InvalidArgumentError(absl::StrCat("card stream ended after ", written,
                                                         " bytes; the header declares card_bytes ",
                                                         declared));
        }
        return sink.Finish();
      },
      IdCheck::kVerifyAll);
}

absl::StatusOr<CardHandle> CardStore::Get(const CardId& id, const CardExpectation& expect) {
  absl::MutexLock lock(&mu_);
  EvictExpiredLocked();
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("card ", id.ToHex(), " is not stored"));
  }
  const CardMetadata& m = it->second->card->metadata();
  if (expect.fingerprint != nullptr && *expect.fingerprint != m.fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat("card ", id.ToHex(), " is for model fingerprint ",
                     FingerprintHex(m.fingerprint).substr(0, 12), ", expected ",
                     FingerprintHex(*expect.fingerprint).substr(0, 12)));
  }
  if (expect.token_digest != nullptr) {
    const Sha256 digest = DigestTokens(m.token_ids);
    if (digest != *expect.token_digest) {
      return absl::FailedPreconditionError(
          absl::StrCat("card ", id.ToHex(), " holds another context (token digest ",
                       Sha256Hex(digest).substr(0, 12), ", expected ",
                       Sha256Hex(*expect.token_digest).substr(0, 12), ")"));
    }
  }
  ++it->second->handles;
  Touch(it->second.get());
  return CardHandle(this, it->second->card.get());
}

absl::StatusOr<CardHandle> CardStore::Peek(const CardId& id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("card ", id.ToHex(), " is not stored"));
  }
  ++it->second->handles;
  return CardHandle(this, it->second->card.get(), /*use=*/false);
}

absl::StatusOr<CardNeed> CardStore::Need(const CardId& id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("card ", id.ToHex(), " is not stored"));
  }
  ++it->second->needs;
  return CardNeed(this, id);
}

void CardStore::ReleaseNeed(const CardId& id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it != entries_.end()) --it->second->needs;
}

absl::Status CardStore::Pin(const CardId& id, absl::Time until) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("card ", id.ToHex(), " is not stored"));
  }
  it->second->pinned_until = until;
  return absl::OkStatus();
}

const Card* CardStore::Find(const CardId& id) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : it->second->card.get();
}

void CardStore::Release(const Card* card, bool use) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(card->id());
  if (it == entries_.end()) return;  // can't happen: a handle pins its entry
  --it->second->handles;
  if (use) Touch(it->second.get());
}

void CardStore::Drop(const CardId& id) {
  auto it = entries_.find(id);
  Entry& entry = *it->second;
  const CardMetadata& m = entry.card->metadata();
  if (m.first_token > 0) {
    auto parent = entries_.find(m.parent_id);
    if (parent != entries_.end()) --parent->second->children;
  }
  ::shm_unlink(entry.segment.c_str());
  used_bytes_ -= entry.bytes;
  by_stored_.erase(entry.by_stored);
  entries_.erase(it);  // unmaps; readers' own mappings stay valid
}

bool CardStore::Evictable(const Entry& entry, absl::Time now) const {
  return entry.handles == 0 && entry.children == 0 && entry.pinned_until <= now;
}

bool CardStore::EvictOne() {
  // Rule 4: unneeded before needed, then least recently used.
  const absl::Time now = Now();
  const Entry* victim = nullptr;
  CardId victim_id;
  for (const auto& [id, entry] : entries_) {
    if (!Evictable(*entry, now)) continue;
    const bool better =
        victim == nullptr || (entry->needs == 0) > (victim->needs == 0) ||
        ((entry->needs == 0) == (victim->needs == 0) && entry->use_order < victim->use_order);
    if (better) {
      victim = entry.get();
      victim_id = id;
    }
  }
  if (victim == nullptr) return false;
  Drop(victim_id);
  if (options_.on_evict) options_.on_evict(victim_id);
  return true;
}

bool CardStore::Expired(const Entry& entry, absl::Time now) const {
  return Evictable(entry, now) && entry.needs == 0 && now - entry.stored > options_.ttl;
}

void CardStore::EvictExpiredLocked() {
  if (options_.ttl == absl::ZeroDuration()) return;
  const absl::Time now = Now();
  // Oldest first, stopping at the first card too young to expire. A parent
  // is older than its children, so dropping a child can only expose cards
  // before `it`: they are dropped right away (walking up the chain).
  for (auto it = by_stored_.begin(); it != by_stored_.end() && now - it->first > options_.ttl;) {
    CardId id = it->second;
    ++it;
    while (true) {
      const Entry& entry = *entries_.at(id);
      if (!Expired(entry, now)) break;
      const CardId parent = entry.card->metadata().parent_id;
      const bool has_parent = entry.card->metadata().first_token > 0;
      // A parent stored at the same instant may sit at `it` (equal keys).
      if (it != by_stored_.end() && it->second == id) ++it;
      Drop(id);
      if (options_.on_evict) options_.on_evict(id);
      if (!has_parent || !entries_.contains(parent)) break;
      id = parent;
    }
  }
}

void CardStore::ExpiryLoop() {
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.expiry_period)) {
    EvictExpiredLocked();
  }
}

void CardStore::EvictExpired() {
  absl::MutexLock lock(&mu_);
  EvictExpiredLocked();
}

absl::Status CardStore::Remove(const CardId& id) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("card ", id.ToHex(), " is not stored"));
  }
  if (it->second->handles > 0 || it->second->children > 0) {
    return absl::FailedPreconditionError(absl::StrCat("card ", id.ToHex(), " is in use (",
                                                      it->second->handles, " handles, ",
                                                      it->second->children, " children)"));
  }
  Drop(id);
  return absl::OkStatus();
}

std::vector<StoredCardInfo> CardStore::List() const {
  absl::MutexLock lock(&mu_);
  const absl::Time now = Now();
  std::vector<std::pair<uint64_t, StoredCardInfo>> rows;
  for (const auto& [id, entry] : entries_) {
    const CardMetadata& m = entry->card->metadata();
    StoredCardInfo info;
    info.id = id;
    info.parent_id = m.parent_id;
    info.segment = entry->segment;
    info.bytes = entry->bytes;
    info.first_token = m.first_token;
    info.total_tokens = m.total_tokens();
    info.avg_bits = m.avg_bits;
    info.handles = entry->handles;
    info.children = entry->children;
    info.age = now - entry->stored;
    info.idle = now - entry->last_used;
    info.needs = entry->needs;
    info.pinned_until = entry->pinned_until;
    rows.emplace_back(entry->use_order, std::move(info));
  }
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<StoredCardInfo> out;
  out.reserve(rows.size());
  for (auto& row : rows) out.push_back(std::move(row.second));
  return out;
}

uint64_t CardStore::used_bytes() const {
  absl::MutexLock lock(&mu_);
  return used_bytes_;
}

}  // namespace qkvshare::cachecard::shm

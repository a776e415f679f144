#include "cachecard/shm/card_store.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "cachecard/card_file.h"
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
    return segment_->Begin(card_bytes);
  }
  absl::Span<uint8_t> Window(uint64_t offset, uint64_t bytes) override {
    return segment_->Window(offset, bytes);
  }
  absl::Status Write(uint64_t offset, absl::Span<const uint8_t> data) override {
    return segment_->Write(offset, data);
  }
  absl::Status Finish() override { return segment_->Finish(); }

 private:
  CardStore* store_;
  ShmSegmentSink* segment_;
  uint64_t reserved_ = 0;
};

CardHandle::CardHandle(CardHandle&& other) noexcept
    : store_(std::exchange(other.store_, nullptr)), card_(std::exchange(other.card_, nullptr)) {}

CardHandle& CardHandle::operator=(CardHandle&& other) noexcept {
  if (this != &other) {
    Reset();
    store_ = std::exchange(other.store_, nullptr);
    card_ = std::exchange(other.card_, nullptr);
  }
  return *this;
}

CardHandle::~CardHandle() { Reset(); }

void CardHandle::Reset() {
  if (store_ != nullptr && card_ != nullptr) store_->Release(card_);
  store_ = nullptr;
  card_ = nullptr;
}

absl::StatusOr<std::unique_ptr<CardStore>> CardStore::Create(CardStoreOptions options) {
  QKV_RETURN_IF_ERROR(ValidateInstanceName(options.instance));
  if (options.quota_bytes == 0) return absl::InvalidArgumentError("CardStore: quota_bytes is 0");
  if (options.ttl < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("CardStore: negative ttl");
  }
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<InstanceLock> lock,
                       InstanceLock::Acquire(options.instance, options.lock_dir));
  QKV_ASSIGN_OR_RETURN(StaleSegments stale, RemoveInstanceSegments(options.instance));
  std::unique_ptr<CardStore> store(new CardStore(std::move(options), std::move(lock)));
  store->stale_at_start_ = std::move(stale);
  return store;
}

CardStore::~CardStore() {
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

void CardStore::Unreserve(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  reserved_bytes_ -= bytes;
}

void CardStore::Touch(Entry* entry) {
  entry->last_used = Now();
  entry->use_order = ++use_counter_;
}

absl::StatusOr<CardHandle> CardStore::Put(const CardId& id, const WriteFn& write) {
  {
    absl::MutexLock lock(&mu_);
    EvictExpiredLocked();
    if (entries_.contains(id)) {
      return absl::AlreadyExistsError(absl::StrCat("card ", id.ToHex(), " is already stored"));
    }
  }
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<ShmSegmentSink> segment,
                       ShmSegmentSink::Create(SegmentName(id)));
  CardPtr card;
  {
    StoreSink sink(this, segment.get());  // releases its reservation when done
    QKV_RETURN_IF_ERROR(write(sink));
    QKV_ASSIGN_OR_RETURN(card, segment->Seal(Card::Verify::kMetadataOnly));
    // The reservation becomes stored bytes below, under one lock.
    absl::MutexLock lock(&mu_);
    used_bytes_ += card->bytes().size();
  }
  const CardMetadata& m = card->metadata();
  absl::MutexLock lock(&mu_);
  auto undo = [&](absl::Status s) {
    used_bytes_ -= card->bytes().size();
    ::shm_unlink(segment->name().c_str());
    return s;
  };
  if (card->id() != id) {
    return undo(absl::InvalidArgumentError(
        absl::StrCat("card written as ", id.ToHex(), " has id ", card->id().ToHex())));
  }
  if (entries_.contains(id)) {
    return undo(absl::AlreadyExistsError(absl::StrCat("card ", id.ToHex(), " is already stored")));
  }
  if (m.first_token > 0) {
    auto parent = entries_.find(m.parent_id);
    if (parent == entries_.end()) {
      return undo(absl::NotFoundError(absl::StrCat("parent card ", m.parent_id.ToHex(), " of card ",
                                                   id.ToHex(), " is not stored")));
    }
    ++parent->second->children;
  }
  auto entry = std::make_unique<Entry>();
  entry->segment = segment->name();
  entry->bytes = card->bytes().size();
  entry->handles = 1;
  entry->stored = Now();
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
  return Put(provenance.card_id, [&](CardSink& sink) {
    return WriteCard(cache, num_tokens, token_ids, encoding, fingerprint, provenance, parent, sink)
        .status();
  });
}

absl::StatusOr<CardHandle> CardStore::Add(const Card& card) {
  return Put(card.id(), [&](CardSink& sink) {
    BufferSource source(card.bytes());
    return CopyCard(source, sink).status();
  });
}

absl::StatusOr<CardHandle> CardStore::ImportFile(const std::string& path) {
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<FileSource> source, FileSource::Open(path));
  std::vector<uint8_t> prefix(std::min<uint64_t>(source->size(), sizeof(CardHeader)));
  QKV_RETURN_IF_ERROR(source->Read(0, absl::MakeSpan(prefix)));
  absl::StatusOr<CardHeader> header = ReadPreamble(prefix, source->size());
  if (!header.ok()) {
    return absl::Status(header.status().code(),
                        absl::StrCat(path, ": ", header.status().message()));
  }
  CardId id;
  std::memcpy(id.bytes.data(), header->card_id, id.bytes.size());
  absl::StatusOr<CardHandle> handle =
      Put(id, [&](CardSink& sink) { return CopyCard(*source, sink).status(); });
  if (!handle.ok()) {
    return absl::Status(handle.status().code(),
                        absl::StrCat(path, ": ", handle.status().message()));
  }
  return handle;
}

absl::StatusOr<CardHandle> CardStore::Get(const CardId& id) {
  absl::MutexLock lock(&mu_);
  EvictExpiredLocked();
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("card ", id.ToHex(), " is not stored"));
  }
  ++it->second->handles;
  Touch(it->second.get());
  return CardHandle(this, it->second->card.get());
}

const Card* CardStore::Find(const CardId& id) const {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : it->second->card.get();
}

void CardStore::Release(const Card* card) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(card->id());
  if (it == entries_.end()) return;  // can't happen: a handle pins its entry
  --it->second->handles;
  Touch(it->second.get());
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
  entries_.erase(it);  // unmaps; readers' own mappings stay valid
}

bool CardStore::EvictOne() {
  const Entry* victim = nullptr;
  CardId victim_id;
  for (const auto& [id, entry] : entries_) {
    if (entry->handles > 0 || entry->children > 0) continue;
    if (victim == nullptr || entry->use_order < victim->use_order) {
      victim = entry.get();
      victim_id = id;
    }
  }
  if (victim == nullptr) return false;
  Drop(victim_id);
  if (options_.on_evict) options_.on_evict(victim_id);
  return true;
}

void CardStore::EvictExpiredLocked() {
  if (options_.ttl == absl::ZeroDuration()) return;
  const absl::Time now = Now();
  bool dropped = true;
  while (dropped) {  // dropping a child can expose its expired parent
    dropped = false;
    for (const auto& [id, entry] : entries_) {
      if (entry->handles == 0 && entry->children == 0 && now - entry->stored > options_.ttl) {
        const CardId evicted(id);
        Drop(evicted);
        if (options_.on_evict) options_.on_evict(evicted);
        dropped = true;
        break;
      }
    }
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

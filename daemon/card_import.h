// File: daemon/card_import.h
// -----------------------------------------------------------------------------
// CardImporter: the daemon side of CardService.ImportCard. A client's card
// stream goes chunk by chunk into the shared-memory store
// (CardStore::ImportStream: header checked from the first chunk, bytes
// written straight into the segment, a stream longer than its declared size
// cut off), at most `max_concurrent` imports at once, and the store's errors
// become the API's codes (docs/operations.md "Security").
//
// Thread safety: thread-safe; Import() may run on many threads at once.
//
// Example:
//   CardImporter importer(store, config.limits.max_card_bytes,
//                         config.limits.max_concurrent_imports);
//   QKV_ASSIGN_OR_RETURN(CardHandle h, importer.Import([&](std::string* chunk) { ... }));
#ifndef QKVSHARE_DAEMON_CARD_IMPORT_H_
#define QKVSHARE_DAEMON_CARD_IMPORT_H_

#include <atomic>
#include <cstdint>

#include "absl/status/statusor.h"
#include "cachecard/shm/card_store.h"

namespace qkvshare::daemon {

class CardImporter {
 public:
  // `store` outlives the importer. `max_card_bytes` (limits.max_card_bytes)
  // bounds one card; `max_concurrent` (limits.max_concurrent_imports, >= 1)
  // the imports in progress.
  CardImporter(cachecard::shm::CardStore* store, int64_t max_card_bytes, int max_concurrent)
      : store_(store), max_card_bytes_(max_card_bytes), max_concurrent_(max_concurrent) {}

  // Stores the card arriving through `next`. Beyond `max_concurrent` imports
  // in progress the stream is not read at all.
  // Errors: ResourceExhausted (limits.max_concurrent_imports,
  // limits.max_card_bytes, the store quota); InvalidArgument (not a valid
  // card, naming the check: magic, version, size, checksum, an id that is not
  // its content's; the stream longer or shorter than declared);
  // AlreadyExists (the id is stored with other content); FailedPrecondition
  // (an incremental card whose parent is not stored).
  absl::StatusOr<cachecard::shm::CardHandle> Import(
      const cachecard::shm::CardStore::ChunkReader& next);

  // Imports in progress now.
  int in_progress() const { return in_progress_.load(); }

 private:
  cachecard::shm::CardStore* const store_;
  const int64_t max_card_bytes_;
  const int max_concurrent_;
  std::atomic<int> in_progress_{0};
};

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_CARD_IMPORT_H_

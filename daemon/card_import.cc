#include "daemon/card_import.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace qkvshare::daemon {

absl::StatusOr<cachecard::shm::CardHandle> CardImporter::Import(
    const cachecard::shm::CardStore::ChunkReader& next) {
  if (in_progress_.fetch_add(1) >= max_concurrent_) {
    in_progress_.fetch_sub(1);
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many card imports in progress (limits.max_concurrent_imports = ", max_concurrent_,
        ")"));
  }
  absl::StatusOr<cachecard::shm::CardHandle> handle =
      store_->ImportStream(next, static_cast<uint64_t>(max_card_bytes_));
  in_progress_.fetch_sub(1);
  if (handle.ok()) return handle;
  const absl::Status& s = handle.status();
  switch (s.code()) {
    case absl::StatusCode::kResourceExhausted:
      if (absl::StrContains(s.message(), "the limit is")) {
        return absl::ResourceExhaustedError(absl::StrCat(s.message(), " (limits.max_card_bytes)"));
      }
      return s;
    case absl::StatusCode::kNotFound:  // the parent of an incremental card
      return absl::FailedPreconditionError(s.message());
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kUnimplemented:
      // The bytes are the client's: a card that fails validation (checksum,
      // version, ...) is an invalid argument at the API, not data loss
      // inside the daemon.
      return absl::InvalidArgumentError(absl::StrCat(
          "not a valid card (", absl::StatusCodeToString(s.code()), "): ", s.message()));
    case absl::StatusCode::kInvalidArgument:  // magic, truncated, too long, forged id
      return absl::InvalidArgumentError(absl::StrCat("not a valid card: ", s.message()));
    default:  // AlreadyExists, the daemon's own failures
      return s;
  }
}

}  // namespace qkvshare::daemon

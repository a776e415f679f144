// File: cachecard/card_file.h
// -----------------------------------------------------------------------------
// Export/import of cards as `.qkvcard` files, and the validating streaming
// copy they are built on.
//
// CopyCard validates while it reads: the 256-byte header first (so a hostile
// header cannot make the destination allocate anything), then the metadata,
// then each section is streamed into the sink and its checksum compared as
// it completes. Memory: the metadata plus one chunk (<= 4 MiB), besides the
// destination itself; memory-backed sinks are filled in place.
//
// Thread safety: reentrant.
//
// Example:
//   QKV_RETURN_IF_ERROR(ExportCard(*card, "/tmp/handoff.qkvcard"));
//   QKV_ASSIGN_OR_RETURN(CardPtr back, ImportCard("/tmp/handoff.qkvcard"));
#ifndef QKVSHARE_CACHECARD_CARD_FILE_H_
#define QKVSHARE_CACHECARD_CARD_FILE_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cachecard/card.h"
#include "cachecard/io.h"
#include "cachecard/metadata.h"

namespace qkvshare::cachecard {

// Copies the card in `source` (which must hold exactly one card) to `sink`,
// validating everything on the way, and returns its metadata. The sink gets
// Begin(card_bytes) only after the metadata passed; on error Finish() is not
// called. Errors: those of ParseMetadata and Card::VerifySections (DataLoss
// "checksum of segment s layer l K section"), the source's read errors, the
// sink's errors.
absl::StatusOr<CardMetadata> CopyCard(CardSource& source, CardSink& sink);

// Writes `card` to `path` (atomically: "<path>.partial", then rename).
// Errors: from the file system, naming the path.
absl::Status ExportCard(const Card& card, const std::string& path);

// Reads and validates the card at `path` into memory.
// Errors: from the file system (NotFound, ...), those of CopyCard.
absl::StatusOr<CardPtr> ImportCard(const std::string& path);

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_CARD_FILE_H_

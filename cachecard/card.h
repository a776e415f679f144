// File: cachecard/card.h
// -----------------------------------------------------------------------------
// Card: one validated, immutable CacheCard in memory: either an owned buffer
// or a read-only mapping owned elsewhere (a shared-memory segment), plus its
// parsed CardMetadata. Injection reads sections in place (zero copy).
//
// Lifecycle: created only by the factories below, which validate the bytes
// (metadata always, section checksums unless told the caller just produced
// or verified them); never modified afterwards. Injecting or flattening a
// card any number of times leaves its bytes unchanged.
//
// Ownership: a Card owns its buffer, or runs the mapping's `release` callback
// (e.g. munmap) when destroyed. Views returned by bytes()/section() live as
// long as the Card.
//
// Thread safety: immutable after creation; safe to share between threads.
//
// Example:
//   QKV_ASSIGN_OR_RETURN(CardPtr card, Card::Copy(bytes));   // validates
//   const CardMetadata& m = card->metadata();
//   LOG(INFO) << m.card_id().ToHex() << " " << m.total_tokens() << " tokens";
#ifndef QKVSHARE_CACHECARD_CARD_H_
#define QKVSHARE_CACHECARD_CARD_H_

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cachecard/io.h"
#include "cachecard/metadata.h"

namespace qkvshare::cachecard {

class Card;
using CardPtr = std::unique_ptr<Card>;

class Card {
 public:
  // What a factory checks. Metadata (magic, version, sizes, header checksum,
  // every field and offset) is always checked.
  enum class Verify {
    kAll,           // also every section checksum and the padding between sections
    kMetadataOnly,  // for bytes the caller has just written or verified
  };

  // Takes ownership of `bytes` (a whole card).
  // Errors: those of ParseMetadata and VerifySections.
  static absl::StatusOr<CardPtr> FromBuffer(AlignedBuffer bytes, Verify verify = Verify::kAll);
  // Copies `bytes` into an owned buffer, then as FromBuffer.
  static absl::StatusOr<CardPtr> Copy(absl::Span<const uint8_t> bytes);
  // Wraps read-only memory owned elsewhere. `release` (may be empty) runs when
  // the Card is destroyed, or before returning if validation fails.
  static absl::StatusOr<CardPtr> FromMapping(absl::Span<const uint8_t> bytes,
                                             std::function<void()> release,
                                             Verify verify = Verify::kAll);

  Card(const Card&) = delete;
  Card& operator=(const Card&) = delete;
  ~Card();

  const CardMetadata& metadata() const { return metadata_; }
  const CardId& id() const { return metadata_.card_id(); }
  // The whole card, card_bytes long.
  absl::Span<const uint8_t> bytes() const { return bytes_; }
  // The bytes of one section of this card's metadata.
  absl::Span<const uint8_t> section(const SectionRef& ref) const {
    return bytes_.subspan(ref.offset, ref.bytes);
  }

  // Re-checks every section checksum and the padding between sections (e.g.
  // before injecting from memory another process could have written).
  // Errors: DataLoss "checksum of segment s layer l K|V section" / "padding".
  absl::Status VerifySections() const;

 private:
  Card(absl::Span<const uint8_t> bytes, AlignedBuffer owned, std::function<void()> release,
       CardMetadata metadata);
  static absl::StatusOr<CardPtr> Create(absl::Span<const uint8_t> bytes, AlignedBuffer owned,
                                        std::function<void()> release, Verify verify);

  absl::Span<const uint8_t> bytes_;
  AlignedBuffer owned_;
  std::function<void()> release_;
  CardMetadata metadata_;
};

// Checks every section checksum of `m` against `card` (the whole card) and
// that the bytes between sections are zero. Errors: as Card::VerifySections.
absl::Status VerifySectionBytes(const CardMetadata& m, absl::Span<const uint8_t> card);

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_CARD_H_

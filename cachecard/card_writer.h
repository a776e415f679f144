// File: cachecard/card_writer.h
// -----------------------------------------------------------------------------
// Internal to cachecard/: writes a planned card (metadata after PlanLayout)
// through a CardSink, section by section, then the metadata with the header
// checksum. Used by BuildCard (sections encoded from a KvCache) and Flatten
// (sections copied from existing cards). Every byte of the card, including
// the zero padding between sections, is written exactly once.
//
// Thread safety: reentrant; see WritePlannedCard for the encoder.
#ifndef QKVSHARE_CACHECARD_CARD_WRITER_H_
#define QKVSHARE_CACHECARD_CARD_WRITER_H_

#include <cstddef>
#include <functional>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "cachecard/io.h"
#include "cachecard/metadata.h"

namespace qkvshare::cachecard {

// Fills `out` (exactly the section's size) with section `index` (layer
// index / 2, K if even) of segment `segment`.
using SectionEncoder =
    std::function<absl::Status(size_t segment, size_t index, absl::Span<uint8_t> out)>;

// A non-zero placeholder id for metadata that is planned (PlanLayout needs
// a non-zero id) before WritePlannedCard derives the real one.
CardId PendingCardId();

// Writes the card described by `m` (planned by PlanLayout into `layout`) to
// `sink`: Begin, every section via `encode` (setting m->...checksum), the
// padding, the metadata, Finish. With a counts_only() sink nothing is encoded.
// The card's id is derived from its content (cachecard/content_id.h) once the
// sections are written: m->provenance.card_id and the origin_card_id of
// segments [first_own_segment, num_segments) (the ones this card encodes)
// are set to it before the metadata is written. With a counts_only() sink
// they are left as they were.
// Sections the sink exposes as Window()s are encoded in place on up to
// SectionThreads() threads (cachecard/parallel.h), so `encode` must be safe
// to call concurrently for different sections; the sink itself is only
// called from the calling thread.
// Errors: from the sink or the encoder.
absl::Status WritePlannedCard(CardMetadata* m, const MetadataLayout& layout,
                              const SectionEncoder& encode, size_t first_own_segment,
                              CardSink& sink);

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_CARD_WRITER_H_

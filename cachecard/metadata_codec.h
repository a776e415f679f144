// File: cachecard/metadata_codec.h
// -----------------------------------------------------------------------------
// CardMetadata <-> the metadata bytes [0, metadata_bytes) of a CacheCard
// (docs/cachecard.md). The reader checks, in order: magic, version, sizes
// against the bytes available, the header checksum, every field, and that
// every stored offset and size is the canonical one (PlanLayout); it never
// reads section bytes, so it works on a file's prefix and on synthetic
// headers of cards larger than memory. Section checksums are verified by
// cachecard/card.h.
//
// Errors follow the table in docs/cachecard.md "Validation": the status code
// says what kind of problem (InvalidArgument: not a card or malformed;
// Unimplemented: another format version or pre-RoPE keys; DataLoss:
// truncated, trailing bytes, checksum), the message names the field.
//
// Thread safety: pure functions.
#ifndef QKVSHARE_CACHECARD_METADATA_CODEC_H_
#define QKVSHARE_CACHECARD_METADATA_CODEC_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cachecard/format.h"
#include "cachecard/metadata.h"

namespace qkvshare::cachecard {

// Writes the metadata bytes [0, m.metadata_bytes) into `out` (exactly that
// long): records, token ids, bit widths, strings, zero padding and the header
// checksum. REQUIRES: `layout` = PlanLayout(&m) and m's section checksums set.
// Errors: InvalidArgument if `out` has the wrong size.
absl::Status EncodeMetadata(const CardMetadata& m, const MetadataLayout& layout,
                            absl::Span<uint8_t> out);

// Checks the fixed header at the start of a card of `available` bytes (its
// full size: buffer or file size): magic, version, card_bytes == available,
// sizeof(CardHeader) <= metadata_bytes <= card_bytes. `prefix` holds the first
// min(available, sizeof(CardHeader)) bytes or more. Does not verify the
// checksum.
// Errors: InvalidArgument "empty" / "not a CacheCard"; Unimplemented "format
// version"; DataLoss "truncated" / "trailing" / "metadata_bytes".
absl::StatusOr<CardHeader> ReadPreamble(absl::Span<const uint8_t> prefix, uint64_t available);

// Parses and fully validates the metadata of a card of `available` bytes.
// `prefix` holds at least its first metadata_bytes bytes (more is fine).
// Errors: those of ReadPreamble; DataLoss "truncated" (prefix too short) and
// "header checksum"; InvalidArgument "malformed card: <field> ...";
// Unimplemented "pre-RoPE".
absl::StatusOr<CardMetadata> ParseMetadata(absl::Span<const uint8_t> prefix, uint64_t available);

// Recomputes and stores the header checksum of `metadata` (bytes [0,
// metadata_bytes) of a card). For the writer and for tests that craft hostile
// headers with a valid checksum. REQUIRES: metadata.size() >= sizeof(CardHeader).
void SealHeaderChecksum(absl::Span<uint8_t> metadata);

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_METADATA_CODEC_H_

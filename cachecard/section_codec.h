// File: cachecard/section_codec.h
// -----------------------------------------------------------------------------
// Encodes one K or V section of a card segment from a KvCache and decodes it
// back into a KvCache (docs/cachecard.md "SectionRecord"):
//   - kFull: the segment's slice of the cache, head-major
//     [num_kv_heads, n, head_dim], in the segment's raw_dtype;
//   - kQuantized: quant::Quantize / quant::Dequantize of the [n, channels]
//     view of the layer (packed layout: docs/quantization.md).
// Internal to cachecard/ (used by build, inject); callers validated the
// segment (ValidateMetadata) and the section's size and checksum.
//
// Thread safety: pure functions over caller-owned buffers; distinct layers
// of one cache may be decoded concurrently.
#ifndef QKVSHARE_CACHECARD_SECTION_CODEC_H_
#define QKVSHARE_CACHECARD_SECTION_CODEC_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "agents/kv_cache.h"
#include "cachecard/metadata.h"

namespace qkvshare::cachecard {

// Writes layer `layer`'s K (is_key) or V of positions [seg.first_token,
// + seg.num_tokens) of `cache` into `out`, which is exactly
// ExpectedSectionBytes(cache.shape(), seg, is_key) long.
// REQUIRES: the positions are < cache.length(); for kFull, seg.raw_dtype ==
// cache.dtype(). Errors: InvalidArgument from quant::Quantize (size mismatch,
// a NaN/Inf element, naming token and channel).
absl::Status EncodeSection(const agents::KvCache& cache, const SegmentInfo& seg, int layer,
                           bool is_key, absl::Span<uint8_t> out);

// Writes `section` (of `seg`, validated) into positions [seg.first_token,
// + seg.num_tokens) of layer `layer`'s K or V in `cache`, converting to the
// cache's dtype. Does not change the cache's length.
// REQUIRES: cache->capacity() >= seg.first_token + seg.num_tokens and
// section.size() == ExpectedSectionBytes(cache->shape(), seg, is_key).
// Errors: InvalidArgument from quant::Dequantize (never for validated input);
// nothing is written then.
absl::Status DecodeSection(absl::Span<const uint8_t> section, const SegmentInfo& seg, int layer,
                           bool is_key, agents::KvCache* cache);

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_SECTION_CODEC_H_

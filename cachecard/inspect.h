// File: cachecard/inspect.h
// -----------------------------------------------------------------------------
// A readable summary of a card's metadata for tools (qkvctl inspect, logs,
// the daemon's card listing): ids, fingerprint, KV shape, tokens, segments,
// bit-width histograms, bytes per layer, effective bits and provenance.
// Works on metadata alone (e.g. from ParseMetadata of a file's prefix).
//
// Thread safety: pure functions.
//
// Example:
//   std::cout << FormatSummary(Summarize(card->metadata()));
#ifndef QKVSHARE_CACHECARD_INSPECT_H_
#define QKVSHARE_CACHECARD_INSPECT_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "agents/kv_cache.h"
#include "base/dtype.h"
#include "cachecard/metadata.h"

namespace qkvshare::cachecard {

struct SegmentSummary {
  int64_t first_token = 0;
  int64_t num_tokens = 0;
  CardMode mode = CardMode::kQuantized;
  DType raw_dtype = DType::kF32;  // kFull
  quant::GroupSpec k_group;       // kQuantized
  quant::GroupSpec v_group;
  std::string origin_card_id;  // hex
  uint32_t origin_hop_index = 0;
  uint64_t section_bytes = 0;  // K + V sections of all layers
};

struct CardSummary {
  std::string card_id;      // 32 hex digits
  std::string parent_id;    // empty for a self-contained card
  std::string fingerprint;  // 64 hex digits
  agents::KvShape shape;
  DType source_dtype = DType::kF32;
  int64_t first_token = 0;
  int64_t num_tokens = 0;  // carried by this card
  int64_t total_tokens = 0;
  std::vector<SegmentSummary> segments;
  // Bit width -> number of carried tokens with that K (V) width.
  std::map<int, int64_t> k_bits_histogram;
  std::map<int, int64_t> v_bits_histogram;
  std::vector<uint64_t> layer_bytes;  // [num_layers]: K + V section bytes
  uint64_t metadata_bytes = 0;
  uint64_t card_bytes = 0;
  double avg_bits = 0;  // mean code bits per element (CardHeader::avg_bits)
  // card_bytes * 8 / (K and V elements carried): bits per element including
  // group parameters, metadata and padding.
  double effective_bits = 0;
  // card_bytes / (bytes of an fp16 KV cache of the carried tokens).
  double fp16_ratio = 0;
  Provenance provenance;
};

CardSummary Summarize(const CardMetadata& m);

// Multi-line "key: value" text of `s`, one segment per line.
std::string FormatSummary(const CardSummary& s);

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_INSPECT_H_

// libFuzzer target for the CacheCard decoder/validator (scripts/fuzz.sh).
//
// Every input is tried twice:
//   1. as is: Card::Copy (metadata + section checks), CopyCard streaming,
//      and, if valid, inject + flatten + inspect;
//   2. "sealed": the header checksum is recomputed for the claimed metadata
//      range and, if the metadata then parses, every section checksum is
//      recomputed too, so that mutations reach field validation and the
//      dequantization of arbitrary section bytes instead of stopping at a
//      checksum.
// Invariants checked (abort on violation): a card that validates injects
// into a cache of its own shape and fingerprint; a failed injection leaves
// the cache's length unchanged; flatten of a valid card parses again.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "agents/kv_cache.h"
#include "cachecard/card.h"
#include "cachecard/card_file.h"
#include "cachecard/flatten.h"
#include "cachecard/format.h"
#include "cachecard/inject.h"
#include "cachecard/inspect.h"
#include "cachecard/io.h"
#include "cachecard/metadata.h"
#include "cachecard/metadata_codec.h"

namespace qkvshare::cachecard {
namespace {

// Largest KV cache (bytes) the harness allocates for an injection.
constexpr double kMaxCacheBytes = 64.0 * (1 << 20);

void Check(bool ok, const char* what, const absl::Status& s = absl::OkStatus()) {
  if (!ok) {
    std::fprintf(stderr, "invariant violated: %s (%s)\n", what, s.ToString().c_str());
    std::abort();
  }
}

void Exercise(const Card& card) {
  const CardMetadata& m = card.metadata();
  (void)FormatSummary(Summarize(m));
  const double cache_bytes =
      2.0 * m.shape.num_layers * m.shape.channels() * static_cast<double>(m.total_tokens()) * 4;
  if (m.first_token == 0 && cache_bytes <= kMaxCacheBytes) {
    auto cache = agents::KvCache::Create(m.shape, DType::kF32, m.total_tokens());
    Check(cache.ok(), "cache", cache.status());
    absl::Status s = InjectCard(card, nullptr, m.fingerprint, cache->get());
    Check(s.ok(), "a valid card injects", s);
    Check((*cache)->length() == m.total_tokens(), "length after inject");
    auto bf16 = agents::KvCache::Create(m.shape, DType::kBF16, m.total_tokens());
    Check(bf16.ok(), "cache", bf16.status());
    s = InjectCard(card, nullptr, m.fingerprint, bf16->get());
    Check(s.ok(), "a valid card injects into bf16", s);
  }
  if (m.first_token > 0) {  // no parents here: must fail cleanly
    auto cache = agents::KvCache::Create({1, 1, 1}, DType::kF32, 1);
    absl::Status s = InjectCard(card, nullptr, m.fingerprint, cache->get());
    Check(s.code() == absl::StatusCode::kNotFound, "missing parent", s);
    Check((*cache)->length() == 0, "cache untouched");
    return;
  }
  CardId id;
  id.bytes.fill(0xee);
  absl::StatusOr<CardPtr> flat = Flatten(card, nullptr, {id, 0});
  if (flat.ok()) {
    Check(Card::Copy((*flat)->bytes()).ok(), "flat card re-parses");
  }
}

void TryBytes(const std::vector<uint8_t>& bytes) {
  BufferSource source(bytes);
  CountingSink counter;
  absl::StatusOr<CardMetadata> streamed = CopyCard(source, counter);
  absl::StatusOr<CardPtr> card = Card::Copy(bytes);
  Check(streamed.ok() == card.ok(), "streaming and in-memory validation agree",
        card.ok() ? streamed.status() : card.status());
  if (card.ok()) Exercise(**card);
}

// Recomputes every checksum so validation gets past them.
std::vector<uint8_t> Seal(std::vector<uint8_t> bytes) {
  if (bytes.size() < sizeof(CardHeader)) return bytes;
  CardHeader h;
  std::memcpy(&h, bytes.data(), sizeof h);
  if (h.metadata_bytes < sizeof(CardHeader) || h.metadata_bytes > bytes.size()) return bytes;
  SealHeaderChecksum(absl::MakeSpan(bytes).first(h.metadata_bytes));
  absl::StatusOr<CardMetadata> m = ParseMetadata(bytes, bytes.size());
  if (!m.ok()) return bytes;
  for (SegmentInfo& seg : m->segments) {
    for (SectionRef& ref : seg.sections) {
      ref.checksum = SectionChecksum(absl::MakeConstSpan(bytes).subspan(ref.offset, ref.bytes));
    }
  }
  absl::StatusOr<MetadataLayout> layout = PlanLayout(&*m);
  Check(layout.ok(), "a parsed card plans", layout.status());
  Check(m->metadata_bytes == h.metadata_bytes, "canonical layout is stable");
  absl::Status s = EncodeMetadata(*m, *layout, absl::MakeSpan(bytes).first(m->metadata_bytes));
  Check(s.ok(), "re-encode", s);
  return bytes;
}

}  // namespace
}  // namespace qkvshare::cachecard

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qkvshare::cachecard;  // NOLINT: fuzzer entry point
  std::vector<uint8_t> bytes(data, data + size);
  TryBytes(bytes);
  TryBytes(Seal(std::move(bytes)));
  return 0;
}

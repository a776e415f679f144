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
// into a cache of its own shape and fingerprint, or (corrupt section
// contents under valid checksums) fails as "malformed card" leaving the
// cache's length and held tokens unchanged; streaming and in-memory
// validation agree; flatten of a valid card parses again.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/match.h"
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

// Raw bytes of positions [0, length()) of every layer's K and V.
std::vector<uint8_t> Contents(const agents::KvCache& cache) {
  std::vector<uint8_t> out;
  const size_t element = DTypeSize(cache.dtype());
  const size_t run = static_cast<size_t>(cache.length()) * cache.shape().head_dim * element;
  for (int layer = 0; layer < cache.shape().num_layers; ++layer) {
    for (const void* data : {cache.k_data(layer), cache.v_data(layer)}) {
      for (int h = 0; h < cache.shape().num_kv_heads; ++h) {
        const auto* p = static_cast<const uint8_t*>(data) + h * cache.head_stride() * element;
        out.insert(out.end(), p, p + run);
      }
    }
  }
  return out;
}

// Injects into a cache of `dtype` that already holds `held` tokens of a
// fixed pattern: either it succeeds, or it reports a malformed card (corrupt
// section contents) and the held tokens are exactly as before.
void InjectInto(const Card& card, DType dtype, int64_t held) {
  const CardMetadata& m = card.metadata();
  auto cache = agents::KvCache::Create(m.shape, dtype, std::max(m.total_tokens(), held));
  Check(cache.ok(), "cache", cache.status());
  agents::KvCache& c = **cache;
  Check(c.Reserve(held).ok() && c.SetLength(held).ok(), "prefill");
  for (int layer = 0; layer < m.shape.num_layers; ++layer) {
    std::memset(c.k_data(layer), 0x3c, c.head_stride() * m.shape.num_kv_heads * DTypeSize(dtype));
    std::memset(c.v_data(layer), 0x41, c.head_stride() * m.shape.num_kv_heads * DTypeSize(dtype));
  }
  const std::vector<uint8_t> before = Contents(c);
  absl::Status s = InjectCard(card, nullptr, m.fingerprint, &c);
  if (s.ok()) {
    Check(c.length() == m.total_tokens(), "length after inject");
    return;
  }
  Check(s.code() == absl::StatusCode::kInvalidArgument &&
            absl::StrContains(s.message(), "malformed card"),
        "a validated card injects or is reported malformed", s);
  Check(c.length() == held, "length kept after a failed inject", s);
  Check(Contents(c) == before, "contents kept after a failed inject", s);
}

void Exercise(const Card& card) {
  const CardMetadata& m = card.metadata();
  (void)FormatSummary(Summarize(m));
  const double cache_bytes =
      2.0 * m.shape.num_layers * m.shape.channels() * static_cast<double>(m.total_tokens()) * 4;
  if (m.first_token == 0 && cache_bytes <= kMaxCacheBytes) {
    InjectInto(card, DType::kF32, 0);
    InjectInto(card, DType::kBF16, std::min<int64_t>(m.total_tokens(), 3));
  }
  if (m.first_token > 0) {  // no parents here: must fail cleanly
    auto cache = agents::KvCache::Create({1, 1, 1}, DType::kF32, 1);
    absl::Status s = InjectCard(card, nullptr, m.fingerprint, cache->get());
    Check(s.code() == absl::StatusCode::kNotFound, "missing parent", s);
    Check((*cache)->length() == 0, "cache untouched");
    return;
  }
  absl::StatusOr<CardPtr> flat = Flatten(card, nullptr, {0});
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

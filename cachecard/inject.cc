#include "cachecard/inject.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "cachecard/parallel.h"
#include "cachecard/section_codec.h"

namespace qkvshare::cachecard {
namespace {

absl::Status Annotate(const absl::Status& s, const Card& leaf) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("inject card ", leaf.id().ToHex(), ": ", s.message()));
}

std::string ShapeString(const agents::KvShape& s) {
  return absl::StrCat(s.num_layers, " layers x ", s.num_kv_heads, " kv heads x head_dim ",
                      s.head_dim);
}

absl::Status Validate(absl::Span<const Card* const> chain, const ModelFingerprint& fingerprint,
                      const agents::KvCache& cache) {
  const CardMetadata& leaf = chain.back()->metadata();
  if (leaf.fingerprint != fingerprint) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model fingerprint mismatch: the card was built for ", FingerprintHex(leaf.fingerprint),
        ", this model is ", FingerprintHex(fingerprint)));
  }
  if (!(leaf.shape == cache.shape())) {
    return absl::FailedPreconditionError(absl::StrCat("KV shape mismatch: card ",
                                                      ShapeString(leaf.shape), ", cache ",
                                                      ShapeString(cache.shape())));
  }
  for (const Card* card : chain) {
    absl::Status s = card->VerifySections();
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("card ", card->id().ToHex(), ": ", s.message()));
    }
  }
  return absl::OkStatus();
}

// Positions [0, tokens) of every layer's K and V, copied out of the cache
// before an injection writes, to restore if it fails half way.
class Backup {
 public:
  Backup(const agents::KvCache& cache, int64_t tokens) : tokens_(tokens) {
    ForEachRun(cache,
               [&](const uint8_t* run, size_t n) { bytes_.insert(bytes_.end(), run, run + n); });
  }
  void Restore(agents::KvCache* cache) const {
    size_t at = 0;
    ForEachRun(*cache, [&](uint8_t* run, size_t n) {
      std::memcpy(run, bytes_.data() + at, n);
      at += n;
    });
  }

 private:
  // fn(start of one head's run of `tokens_` rows, its bytes) for every
  // layer, K then V, head; Cache is KvCache or const KvCache.
  template <typename Cache, typename Fn>
  void ForEachRun(Cache& cache, Fn fn) const {
    using Byte = std::conditional_t<std::is_const_v<Cache>, const uint8_t, uint8_t>;
    const size_t element = DTypeSize(cache.dtype());
    const size_t run = static_cast<size_t>(tokens_) * cache.shape().head_dim * element;
    const size_t stride = static_cast<size_t>(cache.head_stride()) * element;
    for (int layer = 0; layer < cache.shape().num_layers; ++layer) {
      for (Byte* data :
           {static_cast<Byte*>(cache.k_data(layer)), static_cast<Byte*>(cache.v_data(layer))}) {
        for (int h = 0; h < cache.shape().num_kv_heads; ++h) fn(data + h * stride, run);
      }
    }
  }

  int64_t tokens_;
  std::vector<uint8_t> bytes_;
};

// Writes a chain ({root, ..., leaf} from ResolveChain) after validating it.
absl::Status InjectChain(absl::Span<const Card* const> chain, const ModelFingerprint& fingerprint,
                         agents::KvCache* cache) {
  const Card& leaf = *chain.back();
  QKV_RETURN_IF_ERROR(Annotate(Validate(chain, fingerprint, *cache), leaf));
  const int64_t total = leaf.metadata().total_tokens();
  QKV_RETURN_IF_ERROR(Annotate(cache->Reserve(total), leaf));
  // quant::Dequantize checks a section's contents (finite group parameters
  // and raw values) before writing it; a section that fails leaves earlier
  // sections written, so the tokens the cache held are saved first (nothing
  // to save for an empty cache: positions >= length() are unspecified).
  std::unique_ptr<Backup> backup;
  const int64_t held = std::min(cache->length(), total);
  if (held > 0) backup = std::make_unique<Backup>(*cache, held);
  // Every section writes its own layer, K or V, and token range of the
  // cache: disjoint, so they are decoded on a few threads.
  struct Section {
    const Card* card;
    size_t segment;
    int layer;
    bool is_key;
  };
  std::vector<Section> sections;
  uint64_t section_bytes = 0;
  for (const Card* card : chain) {
    const CardMetadata& m = card->metadata();
    for (size_t s = 0; s < m.segments.size(); ++s) {
      for (int layer = 0; layer < m.shape.num_layers; ++layer) {
        for (bool is_key : {true, false}) {
          sections.push_back({card, s, layer, is_key});
          const SegmentInfo& seg = m.segments[s];
          section_bytes += (is_key ? seg.k_section(layer) : seg.v_section(layer)).bytes;
        }
      }
    }
  }
  absl::Status decoded = ParallelForSections(
      sections.size(), SectionThreads(section_bytes), [&](size_t j) -> absl::Status {
        const auto& [card, s, layer, is_key] = sections[j];
        const SegmentInfo& seg = card->metadata().segments[s];
        const SectionRef& ref = is_key ? seg.k_section(layer) : seg.v_section(layer);
        absl::Status st = DecodeSection(card->section(ref), seg, layer, is_key, cache);
        if (st.ok()) return st;
        return absl::InvalidArgumentError(absl::StrCat(
            "inject card ", leaf.id().ToHex(), ": malformed card ", card->id().ToHex(),
            ": segment ", s, " layer ", layer, is_key ? " K" : " V", " section: ", st.message()));
      });
  if (!decoded.ok()) {
    if (backup != nullptr) backup->Restore(cache);
    return decoded;
  }
  QKV_RETURN_IF_ERROR(Annotate(cache->SetLength(total), leaf));
  return absl::OkStatus();
}

}  // namespace

absl::Status InjectCard(const Card& card, const CardResolver* parents,
                        const ModelFingerprint& fingerprint, agents::KvCache* cache) {
  absl::StatusOr<std::vector<const Card*>> chain = ResolveChain(card, parents);
  if (!chain.ok()) return Annotate(chain.status(), card);
  return InjectChain(*chain, fingerprint, cache);
}

}  // namespace qkvshare::cachecard

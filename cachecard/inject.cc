#include "cachecard/inject.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
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

// Writes a validated chain ({root, ..., leaf} from ResolveChain).
absl::Status InjectChain(absl::Span<const Card* const> chain, const ModelFingerprint& fingerprint,
                         agents::KvCache* cache) {
  if (chain.empty()) return absl::InvalidArgumentError("inject: empty chain");
  const Card& leaf = *chain.back();
  QKV_RETURN_IF_ERROR(Annotate(Validate(chain, fingerprint, *cache), leaf));
  const int64_t total = leaf.metadata().total_tokens();
  QKV_RETURN_IF_ERROR(Annotate(cache->Reserve(total), leaf));
  // Validated: from here on nothing can fail for a well-formed chain.
  for (const Card* card : chain) {
    const CardMetadata& m = card->metadata();
    for (const SegmentInfo& seg : m.segments) {
      for (int layer = 0; layer < m.shape.num_layers; ++layer) {
        for (bool is_key : {true, false}) {
          const SectionRef& ref = is_key ? seg.k_section(layer) : seg.v_section(layer);
          absl::Status s = DecodeSection(card->section(ref), seg, layer, is_key, cache);
          if (!s.ok()) {
            cache->Truncate(0);
            return absl::InternalError(absl::StrCat("inject card ", leaf.id().ToHex(),
                                                    ": decoding a validated section failed (",
                                                    s.message(), "); cache cleared"));
          }
        }
      }
    }
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

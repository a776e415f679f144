#include "cachecard/testing/golden_card.h"

#include <cstring>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agents/kv_cache.h"
#include "base/status_macros.h"
#include "cachecard/build.h"
#include "cachecard/chain.h"
#include "cachecard/flatten.h"
#include "cachecard/format.h"

namespace qkvshare::cachecard::testing {
namespace {

constexpr agents::KvShape kShape{5, 4, 8};

// The golden card's content-derived id (docs/cachecard.md "Card id"); a
// writer or reader in another language checks its id derivation against it.
constexpr char kGoldenCardIdHex[] = "dbc378aef9bbf0582e4620ee37e14c15";

}  // namespace

float GoldenValue(int layer, bool is_key, int head, int64_t token, int dim) {
  const int64_t k = layer * 131 + (is_key ? 0 : 71) + head * 37 + token * 17 + dim * 7;
  return static_cast<float>(k % 29 - 14) / 8.0f;
}

ModelFingerprint GoldenFingerprint() {
  ModelFingerprint fp;
  for (size_t i = 0; i < fp.size(); ++i) fp[i] = static_cast<uint8_t>(0xc0 ^ i);
  return fp;
}

CardId GoldenCardId() { return *CardId::FromHex(kGoldenCardIdHex); }

std::string GoldenFileName() { return absl::StrCat("golden_v", kCardFormatVersion, ".qkvcard"); }

absl::StatusOr<CardPtr> MakeGoldenCard() {
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<agents::KvCache> cache,
                       agents::KvCache::Create(kShape, DType::kF32, kGoldenTokens, kGoldenTokens));
  for (int layer = 0; layer < kShape.num_layers; ++layer) {
    for (bool is_key : {true, false}) {
      auto* data = static_cast<float*>(is_key ? cache->k_data(layer) : cache->v_data(layer));
      for (int h = 0; h < kShape.num_kv_heads; ++h) {
        for (int64_t t = 0; t < kGoldenTokens; ++t) {
          for (int d = 0; d < kShape.head_dim; ++d) {
            data[h * cache->head_stride() + t * kShape.head_dim + d] =
                GoldenValue(layer, is_key, h, t, d);
          }
        }
      }
    }
  }
  QKV_RETURN_IF_ERROR(cache->SetLength(kGoldenTokens));
  const std::vector<int32_t> ids = {1, 403, 407, 261, 378, 9, 500, 2};

  quant::BitPlan plan;
  plan.k_bits = {2, 3, 4, 8, 16};
  plan.v_bits = {16, 8, 5, 3, 2};
  Provenance hop0{/*card_id=*/{}, "planner", 0, 1'780'000'000'000, "importance", 4.0};
  QKV_ASSIGN_OR_RETURN(CardPtr first,
                       BuildCard(*cache, 5, absl::MakeConstSpan(ids).first(5),
                                 CardEncoding::Quantized(plan, {quant::GroupAxis::kPerChannel, 4},
                                                         {quant::GroupAxis::kPerToken, 16}),
                                 GoldenFingerprint(), hop0));
  Provenance hop1{/*card_id=*/{}, "writer", 1, 1'780'000'000'500, "full", 0.0};
  QKV_ASSIGN_OR_RETURN(CardPtr second, BuildCard(*cache, kGoldenTokens, ids, CardEncoding::Full(),
                                                 GoldenFingerprint(), hop1, first.get()));
  CardSet parents;
  parents.Add(first.get());
  return Flatten(*second, &parents, {1'780'000'001'000});
}

}  // namespace qkvshare::cachecard::testing

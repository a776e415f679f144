// Writes a small seed corpus of valid cards for the card decoder fuzzer
// (scripts/fuzz.sh): full and quantized, f32 and bf16, several group specs
// and widths, a chained card and a flattened chain.
// Usage: make_seeds OUTPUT_DIR
#include <cstdio>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "cachecard/build.h"
#include "cachecard/card_file.h"
#include "cachecard/chain.h"
#include "cachecard/flatten.h"
#include "cachecard/testing/synthetic_kv.h"

namespace qkvshare::cachecard {
namespace {

int Run(const std::string& dir) {
  int written = 0;
  auto save = [&](const absl::StatusOr<CardPtr>& card, const std::string& name) {
    if (!card.ok()) {
      std::fprintf(stderr, "make_seeds %s: %s\n", name.c_str(), card.status().ToString().c_str());
      return false;
    }
    absl::Status s = ExportCard(**card, dir + "/" + name + ".qkvcard");
    if (!s.ok()) {
      std::fprintf(stderr, "make_seeds %s: %s\n", name.c_str(), s.ToString().c_str());
      return false;
    }
    ++written;
    return true;
  };
  std::vector<int32_t> ids(12);
  std::iota(ids.begin(), ids.end(), 1);
  Provenance prov;
  prov.card_id.bytes.fill(1);
  prov.source_agent = "seed";
  const agents::KvShape shapes[2] = {{2, 2, 4}, {1, 3, 8}};
  for (int i = 0; i < 2; ++i) {
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      auto cache = testing::MakeSyntheticCache(shapes[i], dtype, 12, 5 + i);
      if (!cache.ok()) return 1;
      const std::string tag = std::to_string(i) + (dtype == DType::kF32 ? "_f32" : "_bf16");
      save(BuildCard(**cache, 5, absl::MakeConstSpan(ids).first(5), CardEncoding::Full(),
                     ModelFingerprint{}, prov),
           "full_" + tag);
      save(BuildCard(**cache, 12, ids,
                     CardEncoding::Quantized(testing::RandomPlan(12, {2, 3, 4, 8, 16}, i),
                                             {quant::GroupAxis::kPerChannel, 4},
                                             {quant::GroupAxis::kPerToken, 3}),
                     ModelFingerprint{}, prov),
           "mixed_" + tag);
    }
  }
  auto cache = testing::MakeSyntheticCache(shapes[0], DType::kF32, 12, 9);
  auto parent =
      BuildCard(**cache, 7, absl::MakeConstSpan(ids).first(7),
                CardEncoding::Quantized(testing::UniformPlan(7, 3)), ModelFingerprint{}, prov);
  if (!save(parent, "chain_parent")) return 1;
  Provenance child_prov = prov;
  child_prov.card_id.bytes.fill(2);
  child_prov.hop_index = 1;
  auto child = BuildCard(**cache, 12, ids, CardEncoding::Quantized(testing::UniformPlan(5, 8)),
                         ModelFingerprint{}, child_prov, parent->get());
  if (!save(child, "chain_child")) return 1;
  CardSet set;
  set.Add(parent->get());
  save(Flatten(**child, &set, {0}), "chain_flat");
  std::printf("make_seeds: wrote %d cards to %s\n", written, dir.c_str());
  return 0;
}

}  // namespace
}  // namespace qkvshare::cachecard

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  return qkvshare::cachecard::Run(argv[1]);
}

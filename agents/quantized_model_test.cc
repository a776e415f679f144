// Models with weights quantized at load (ModelOptions::quantized_weights) on
// the bundled stories260K: decode (block kernels) agrees with prefill (short
// chunks through the block kernels, long ones dequantize + GEMM), q8 greedy output is stable run to
// run and equal on every SIMD target, the fingerprint covers the format, and the weight bytes are
// the blocks' (no dense copy of the projections).
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "agents/generator.h"
#include "agents/model.h"
#include "agents/sequence.h"
#include "base/cpu_info.h"
#include "gtest/gtest.h"
#include "hwy/targets.h"

namespace qkvshare::agents {
namespace {

constexpr char kModelDir[] = "models/stories260K";

ModelHandle LoadModel(weights::WeightFormat format) {
  ModelOptions options;
  EXPECT_TRUE(ApplyWeightFormat(format, &options).ok());
  options.copy_weights_to_huge_pages = false;  // copied bytes = the blocks only
  absl::StatusOr<std::unique_ptr<Model>> m = Model::Load(kModelDir, options);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? ModelHandle(std::move(*m)) : nullptr;
}

std::vector<int32_t> Greedy(const ModelHandle& model, int tokens) {
  absl::StatusOr<std::unique_ptr<Sequence>> seq = Sequence::Create(model);
  EXPECT_TRUE(seq.ok());
  GenerateOptions options;
  options.max_new_tokens = tokens;
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378};  // BOS "Once upon a time"
  absl::StatusOr<GenerateResult> r = Generate(**seq, prompt, options);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->ids : std::vector<int32_t>{};
}

// Prefill of 11 tokens runs as one kernel chunk (kernels::DecodeChunk, block
// kernels over the chunk); of 24 through libtorch (tiles dequantized for the
// GEMMs). Both must match token-by-token decode.
TEST(QuantizedModelTest, DecodeKernelsAgreeWithPrefill) {
  const std::vector<int32_t> short_ids = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298};
  std::vector<int32_t> long_ids = short_ids;
  long_ids.insert(long_ids.end(),
                  {300, 412, 275, 261, 290, 318, 403, 407, 261, 378, 432, 383, 286});
  for (weights::WeightFormat f : {weights::WeightFormat::kQ8, weights::WeightFormat::kQ4}) {
    const ModelHandle model = LoadModel(f);
    ASSERT_NE(model, nullptr);
    for (const std::vector<int32_t>& ids : {short_ids, long_ids}) {
      auto prefill = Sequence::Create(model);
      auto decode = Sequence::Create(model);
      ASSERT_TRUE(prefill.ok() && decode.ok());
      absl::StatusOr<LogitsView> all = (*prefill)->Append(ids, LogitsMode::kAll);
      ASSERT_TRUE(all.ok()) << all.status();
      const int64_t vocab = all->vocab;
      for (size_t t = 0; t < ids.size(); ++t) {
        absl::StatusOr<absl::Span<const float>> row = (*decode)->Decode(ids[t]);
        ASSERT_TRUE(row.ok()) << row.status();
        double max_diff = 0, max_abs = 0;
        for (int64_t v = 0; v < vocab; ++v) {
          max_diff = std::max(max_diff, std::fabs(double{(*row)[v]} - all->row(t)[v]));
          max_abs = std::max(max_abs, std::fabs(double{all->row(t)[v]}));
        }
        EXPECT_LE(max_diff, 1e-4 * max_abs + 1e-4)
            << weights::WeightFormatName(f) << " position " << t << " of " << ids.size();
      }
    }
  }
}

TEST(QuantizedModelTest, Q8GreedyStableAndEqualOnEveryTarget) {
  const ModelHandle model = LoadModel(weights::WeightFormat::kQ8);
  ASSERT_NE(model, nullptr);
  const std::vector<int32_t> first = Greedy(model, 60);
  ASSERT_EQ(first.size(), 60u);
  EXPECT_EQ(Greedy(model, 60), first);  // run to run
  for (int64_t t : UsableSimdTargets()) {
    ASSERT_TRUE(ForceSimdTarget(hwy::TargetName(t)).ok());
    EXPECT_EQ(Greedy(model, 60), first) << hwy::TargetName(t);
  }
  ASSERT_TRUE(ForceSimdTarget("best").ok());
}

TEST(QuantizedModelTest, FingerprintCoversFormatAndBytesAreBlocks) {
  const ModelHandle f32 = LoadModel(weights::WeightFormat::kAuto);
  const ModelHandle q8 = LoadModel(weights::WeightFormat::kQ8);
  const ModelHandle q4 = LoadModel(weights::WeightFormat::kQ4);
  ASSERT_TRUE(f32 && q8 && q4);
  EXPECT_NE(f32->fingerprint(), q8->fingerprint());
  EXPECT_NE(f32->fingerprint(), q4->fingerprint());
  EXPECT_NE(q8->fingerprint(), q4->fingerprint());
  EXPECT_EQ(LoadModel(weights::WeightFormat::kQ4)->fingerprint(), q4->fingerprint());
  // stories260K: 5 layers of q,k,v,o [64|32, 64] and gate, up [172, 64], down
  // [64, 172] (6 blocks per row); tied embedding [512, 64].
  const int64_t per_layer_blocks = (64 + 32 + 32 + 64) * 2 + 172 * 2 * 2 + 64 * 6;
  EXPECT_EQ(q8->copied_weight_bytes(), static_cast<size_t>(5 * per_layer_blocks * 34));
  EXPECT_EQ(q4->copied_weight_bytes(),
            static_cast<size_t>(5 * per_layer_blocks * 20 + 512 * 2 * 34));
  ModelOptions options;
  EXPECT_FALSE(ApplyWeightFormat(weights::WeightFormat::kF16, &options).ok());
}

}  // namespace
}  // namespace qkvshare::agents

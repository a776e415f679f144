// Models with weights quantized at load (ModelOptions::quantized_weights) on
// the bundled stories260K: decode (block kernels) agrees with prefill (short
// chunks through the block kernels, long ones dequantize + GEMM), q8 greedy output is stable run to
// run and equal on every SIMD target, the fingerprint covers the format, and the weight bytes are
// the blocks' (no dense copy of the projections).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
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

ModelHandle LoadModel(weights::WeightFormat format,
                      std::optional<DType> quantized_gemm = std::nullopt) {
  ModelOptions options;
  EXPECT_TRUE(ApplyWeightFormat(format, &options).ok());
  options.quantized_gemm_dtype = quantized_gemm;
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

// KL(softmax(p) || softmax(q)) of two logit rows, in nats.
double Kl(absl::Span<const float> p, absl::Span<const float> q) {
  const double pmax = *std::max_element(p.begin(), p.end());
  const double qmax = *std::max_element(q.begin(), q.end());
  double zp = 0, zq = 0;
  for (size_t v = 0; v < p.size(); ++v) {
    zp += std::exp(p[v] - pmax);
    zq += std::exp(q[v] - qmax);
  }
  double kl = 0;
  for (size_t v = 0; v < p.size(); ++v) {
    const double lp = p[v] - pmax - std::log(zp), lq = q[v] - qmax - std::log(zq);
    kl += std::exp(lp) * (lp - lq);
  }
  return kl;
}

// Prefill of 11 tokens runs as one kernel chunk (kernels::DecodeChunk, block
// kernels over the chunk); of 24 through libtorch (tiles dequantized for the
// GEMMs, fp32 activations). The kernel chunk must match token-by-token decode
// to fp32 rounding; so must the GEMM path for q8 (float-widening kernels).
// q4 decode quantizes the activations to int8 per block of 32
// (matvec_quant.h), so against the GEMM path it differs by that rounding:
// bounded here by KL and top-1 agreement (measured on these 24 tokens: mean
// KL 0.006, max 0.063, top-1 equal on 23; teacher-forced over the golden cases the q4
// decode path gives mean KL 0.042 vs the f32 model against 0.039 with fp32
// activations, top-1 90.47% both: docs/results.md).
TEST(QuantizedModelTest, DecodeKernelsAgreeWithPrefill) {
  const std::vector<int32_t> short_ids = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298};
  std::vector<int32_t> long_ids = short_ids;
  long_ids.insert(long_ids.end(),
                  {300, 412, 275, 261, 290, 318, 403, 407, 261, 378, 432, 383, 286});
  for (weights::WeightFormat f : {weights::WeightFormat::kQ8, weights::WeightFormat::kQ4}) {
    const ModelHandle model = LoadModel(f);
    ASSERT_NE(model, nullptr);
    for (const std::vector<int32_t>& ids : {short_ids, long_ids}) {
      const bool rounded = f == weights::WeightFormat::kQ4 && ids.size() == long_ids.size();
      auto prefill = Sequence::Create(model);
      auto decode = Sequence::Create(model);
      ASSERT_TRUE(prefill.ok() && decode.ok());
      absl::StatusOr<LogitsView> all = (*prefill)->Append(ids, LogitsMode::kAll);
      ASSERT_TRUE(all.ok()) << all.status();
      const int64_t vocab = all->vocab;
      double kl_sum = 0;
      int agree = 0;
      for (size_t t = 0; t < ids.size(); ++t) {
        absl::StatusOr<absl::Span<const float>> row = (*decode)->Decode(ids[t]);
        ASSERT_TRUE(row.ok()) << row.status();
        double max_diff = 0, max_abs = 0;
        for (int64_t v = 0; v < vocab; ++v) {
          max_diff = std::max(max_diff, std::fabs(double{(*row)[v]} - all->row(t)[v]));
          max_abs = std::max(max_abs, std::fabs(double{all->row(t)[v]}));
        }
        const double kl = Kl(all->row(t), *row);
        kl_sum += kl;
        agree += std::max_element(row->begin(), row->end()) - row->begin() ==
                 std::max_element(all->row(t).begin(), all->row(t).end()) - all->row(t).begin();
        if (!rounded) {
          EXPECT_LE(max_diff, 1e-4 * max_abs + 1e-4)
              << weights::WeightFormatName(f) << " position " << t << " of " << ids.size();
        } else {
          EXPECT_LE(kl, 0.15) << "position " << t;
        }
      }
      if (rounded) {
        std::printf("q4 decode vs GEMM prefill: mean KL %.5f, top-1 agree %d of %zu\n",
                    kl_sum / ids.size(), agree, ids.size());
        EXPECT_LE(kl_sum / ids.size(), 0.02);
        EXPECT_GE(agree, static_cast<int>(ids.size()) - 2);
      }
    }
  }
}

// Prefill's GEMMs over q4 tiles in bf16 (the default where the CPU has
// native bf16 products, ModelOptions::quantized_gemm_dtype) against fp32
// GEMMs, 24 tokens through libtorch: the bf16 rounding of activations and
// tiles is small next to q4's own error (teacher-forced over the golden
// cases: mean KL vs the f32 model 0.03901 against 0.03899, docs/results.md).
// Measured here: mean KL 0.0003-0.0004 between the two, top-1 equal on all 24.
TEST(QuantizedModelTest, Q4Bf16GemmPrefillAgreesWithF32Gemm) {
  const std::vector<int32_t> ids = {1,   403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 300,
                                    412, 275, 261, 290, 318, 403, 407, 261, 378, 432, 383, 286};
  const ModelHandle f32 = LoadModel(weights::WeightFormat::kQ4, DType::kF32);
  const ModelHandle bf16 = LoadModel(weights::WeightFormat::kQ4, DType::kBF16);
  ASSERT_TRUE(f32 && bf16);
  EXPECT_EQ(f32->fingerprint(), bf16->fingerprint());  // same weights, same cards
  auto a = Sequence::Create(f32);
  auto b = Sequence::Create(bf16);
  ASSERT_TRUE(a.ok() && b.ok());
  absl::StatusOr<LogitsView> la = (*a)->Append(ids, LogitsMode::kAll);
  ASSERT_TRUE(la.ok()) << la.status();
  absl::StatusOr<LogitsView> lb = (*b)->Append(ids, LogitsMode::kAll);
  ASSERT_TRUE(lb.ok()) << lb.status();
  double kl_sum = 0, max_diff = 0;
  int agree = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    const absl::Span<const float> ra = la->row(t), rb = lb->row(t);
    kl_sum += Kl(ra, rb);
    for (size_t v = 0; v < ra.size(); ++v) {
      max_diff = std::max(max_diff, std::fabs(double{ra[v]} - rb[v]));
    }
    agree += std::max_element(ra.begin(), ra.end()) - ra.begin() ==
             std::max_element(rb.begin(), rb.end()) - rb.begin();
  }
  std::printf(
      "q4 prefill, bf16 vs f32 GEMMs: mean KL %.6f, max |diff| %.4f, top-1 agree %d of %zu\n",
      kl_sum / ids.size(), max_diff, agree, ids.size());
  EXPECT_GT(max_diff, 0.0);  // the bf16 path really ran
  EXPECT_LE(kl_sum / ids.size(), 0.003);
  EXPECT_GE(agree, static_cast<int>(ids.size()) - 1);
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
  // The tag covers the tensor policy: a q4 model with q6 embeddings is not
  // the q4 model of before (q8 embeddings, tagged "q4"), nor a q8 model with
  // a 16-bit embedding the q8 of before (as stored: f32 here, tagged "q8").
  absl::StatusOr<ModelFingerprint> q4_policy =
      FingerprintWithWeightFormat(f32->fingerprint(), "q4+embed:q6");
  absl::StatusOr<ModelFingerprint> q4_before =
      FingerprintWithWeightFormat(f32->fingerprint(), "q4");
  absl::StatusOr<ModelFingerprint> q8_policy =
      FingerprintWithWeightFormat(f32->fingerprint(), "q8+embed:16bit");
  absl::StatusOr<ModelFingerprint> q8_before =
      FingerprintWithWeightFormat(f32->fingerprint(), "q8");
  ASSERT_TRUE(q4_policy.ok() && q4_before.ok() && q8_policy.ok() && q8_before.ok());
  EXPECT_EQ(q4->fingerprint(), *q4_policy);
  EXPECT_NE(q4->fingerprint(), *q4_before);
  EXPECT_EQ(q8->fingerprint(), *q8_policy);
  EXPECT_NE(q8->fingerprint(), *q8_before);
  EXPECT_NE(q4->runtime_summary().find("weights q4 (embedding q6)"), std::string::npos)
      << q4->runtime_summary();
  // stories260K: 5 layers of q,k,v,o [64|32, 64] and gate, up [172, 64], down
  // [64, 172] (6 blocks per row); tied embedding [512, 64] (2 blocks per row,
  // q6 under q4: 26 bytes a block; bf16 under q8, converted from the f32
  // checkpoint into copied memory). q4 stores rows in groups of 8: gate and
  // up are padded to 176 rows.
  const int64_t per_layer_blocks = (64 + 32 + 32 + 64) * 2 + 172 * 2 * 2 + 64 * 6;
  const int64_t per_layer_blocks_q4 = (64 + 32 + 32 + 64) * 2 + 176 * 2 * 2 + 64 * 6;
  EXPECT_EQ(q8->copied_weight_bytes(),
            static_cast<size_t>(5 * per_layer_blocks * 34 + 512 * 64 * 2));
  EXPECT_EQ(q4->copied_weight_bytes(),
            static_cast<size_t>(5 * per_layer_blocks_q4 * 20 + 512 * 2 * 26));
  ModelOptions options;
  EXPECT_FALSE(ApplyWeightFormat(weights::WeightFormat::kF16, &options).ok());
}

}  // namespace
}  // namespace qkvshare::agents

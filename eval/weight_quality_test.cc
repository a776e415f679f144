// CI guard of the quantized weight formats' quality on the bundled model
// (eval/weight_quality.h; numbers and margins in docs/results.md
// "Quantized weights"): teacher-forced over every golden continuation
// (1522 positions) against the f32 model.
//   q8 (embeddings as stored): mean KL <= 0.0003, top-1 >= 99%
//     (measured 0.00024 and 99.28%: 20% and 0.28 points of margin); the
//     runtime's q8 (16-bit embedding) 0.00026 / 99.15%, same bounds;
//   q4 (embeddings/lm_head in the format of the runtime's policy,
//     weights::EmbeddingFormat: q6): mean KL <= 0.05 (measured 0.0399: 20%
//     margin) and at most 0.65x Q4_0's under the same policy (measured
//     0.52x), top-1 above Q4_0's (90.08% vs 86.07%);
//   q6 alone (q8 projections, embeddings/lm_head q6): mean KL <= 0.002
//     (measured 0.00129) and at most 0.8x the unsearched d = max / -32's
//     (measured 0.00206: 0.63x), so a change of the q6 quantizer that costs
//     quality fails here and not only in the q4 total;
//   the runtime's q8/q4 decode path (the Highway kernels, every SIMD target):
//     q8 mean KL <= 0.0003, top-1 >= 99%, within 0.00003 of its prefill path
//     (measured 0.00026 / 99.15%, equal); q4 <= 0.05 and <= 1.15x its prefill
//     path's (measured 0.0413-0.0418: 1.04x-1.05x); bounds and numbers at
//     RuntimeDecodePathWithinTarget.
#include "eval/weight_quality.h"

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agents/compute_threads.h"
#include "agents/model.h"
#include "agents/weights/quantized_matrix.h"
#include "base/cpu_info.h"
#include "eval/golden_cases.h"
#include "gtest/gtest.h"
#include "hwy/targets.h"

namespace qkvshare::eval {
namespace {

constexpr char kModelDir[] = "models/stories260K";

class WeightQualityTest : public ::testing::Test {
 protected:
  // One thread, as the eval binary: the decode path test runs ~24000
  // single-token steps of a 260K-parameter model, each a few dozen parallel
  // regions that cost more to wake threads for (OMP_WAIT_POLICY=passive in
  // tests) than they compute (measured 103 s instead of 5 s on 2 cores).
  static void SetUpTestSuite() { agents::SetComputeThreads(1); }

  void SetUp() override {
    agents::ModelOptions options;
    options.compute_dtype = DType::kF32;
    absl::StatusOr<std::unique_ptr<agents::Model>> m = agents::Model::Load(kModelDir, options);
    ASSERT_TRUE(m.ok()) << m.status();
    reference_ = std::move(*m);
    absl::StatusOr<std::vector<GoldenCase>> cases =
        LoadGoldenCases(std::string(kModelDir) + "/golden/greedy.json");
    ASSERT_TRUE(cases.ok()) << cases.status();
    cases_ = std::move(*cases);
  }

  WeightQuality Measure(const std::string& scheme_name, const std::string& embeddings) {
    absl::StatusOr<WeightScheme> scheme = FindWeightScheme(scheme_name);
    EXPECT_TRUE(scheme.ok()) << scheme.status();
    if (!scheme.ok()) return {};
    const char* tmp = std::getenv("TEST_TMPDIR");
    const std::string dir =
        std::string(tmp != nullptr ? tmp : "/tmp") + "/wq_" + scheme_name + "_" + embeddings;
    WeightPolicy policy;
    policy.embeddings = embeddings;
    const absl::Status written = WriteRoundTrippedCheckpoint(kModelDir, dir, *scheme, policy);
    EXPECT_TRUE(written.ok()) << written;
    agents::ModelOptions options;
    options.compute_dtype = DType::kF32;
    absl::StatusOr<std::unique_ptr<agents::Model>> m = agents::Model::Load(dir, options);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return {};
    absl::StatusOr<WeightQuality> q =
        CompareTeacherForced(reference_, agents::ModelHandle(std::move(*m)), cases_);
    EXPECT_TRUE(q.ok()) << q.status();
    return q.ok() ? *q : WeightQuality{};
  }

  agents::ModelHandle reference_;
  std::vector<GoldenCase> cases_;
};

// The runtime's own q8/q4 path: the checkpoint quantized at load (with the
// tensor policy, e.g. q8's 16-bit embedding: bf16 here, from f32),
// teacher-forced through prefill with f32 GEMMs. Measured q8 0.00026 /
// 99.15%, q4 0.03987 / 90.08%.
TEST_F(WeightQualityTest, RuntimeQuantizedModelsWithinTarget) {
  for (agents::weights::WeightFormat f :
       {agents::weights::WeightFormat::kQ8, agents::weights::WeightFormat::kQ4}) {
    agents::ModelOptions options;
    options.compute_dtype = DType::kF32;
    ASSERT_TRUE(agents::ApplyWeightFormat(f, &options).ok());
    options.quantized_gemm_dtype = DType::kF32;
    absl::StatusOr<std::unique_ptr<agents::Model>> m = agents::Model::Load(kModelDir, options);
    ASSERT_TRUE(m.ok()) << m.status();
    absl::StatusOr<WeightQuality> q =
        CompareTeacherForced(reference_, agents::ModelHandle(std::move(*m)), cases_);
    ASSERT_TRUE(q.ok()) << q.status();
    EXPECT_GE(q->positions, 1500);
    EXPECT_GT(q->mean_kl, 0.0);
    if (f == agents::weights::WeightFormat::kQ8) {
      EXPECT_LE(q->mean_kl, 0.0003);
      EXPECT_GE(q->top1, 0.99);
    } else {
      EXPECT_LE(q->mean_kl, 0.05);
    }
  }
}

// The runtime's decode path: the q8/q4 models above teacher-forced through
// the Highway kernels (ForwardPath::kDecodeSteps: one Sequence::Decode per
// position, as generation decodes; kKernelChunks: chunks of 16, as short
// prompts run), on every SIMD target this CPU runs (models loaded after the
// target is forced). The kernels compute q8 rows by float widening and q4
// rows by integer dot products over activations quantized to int8 per block
// of 32, so q4's decode path has a loss of its own. Measured (Zen 5,
// AVX3 / AVX2 / SSE4 / SSSE3 / SCALAR; both kernel paths equal to 5 digits):
//   f32 against its own prefill: mean KL 1.1e-12 - 1.4e-12, top-1 100%;
//   q8: 0.00026 / 99.15%, equal to its prefill path to 5 digits;
//   q4: 0.04134 - 0.04183 / 90.21% - 90.80% (prefill 0.03987: 1.04x - 1.05x;
//     the spread between targets is fp32 rounding flipping int8 codes).
// Bounds: f32 mean KL <= 1e-6, top-1 >= 99.9% (the kernels compute the same
// model); q8 mean KL <= 0.0003, top-1 >= 99% and within 0.00003 of its
// prefill path (10% of its loss); q4 mean KL <= 0.05 and <= 1.15x its prefill
// path's (0.006: 3x the measured gap; 8x the spread between targets
// above the highest, so the same integer dot products in a rewritten kernel pass, and a
// kernel that adds a loss of that size fails).
TEST_F(WeightQualityTest, RuntimeDecodePathWithinTarget) {
  const agents::weights::WeightFormat kQ8 = agents::weights::WeightFormat::kQ8;
  const agents::weights::WeightFormat kQ4 = agents::weights::WeightFormat::kQ4;
  auto load = [](std::optional<agents::weights::WeightFormat> format) {
    agents::ModelOptions options;
    options.compute_dtype = DType::kF32;
    if (format.has_value()) {
      EXPECT_TRUE(agents::ApplyWeightFormat(*format, &options).ok());
      options.quantized_gemm_dtype = DType::kF32;
    }
    absl::StatusOr<std::unique_ptr<agents::Model>> m = agents::Model::Load(kModelDir, options);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? agents::ModelHandle(std::move(*m)) : agents::ModelHandle();
  };
  auto measure = [&](const agents::ModelHandle& model, ForwardPath path) {
    absl::StatusOr<WeightQuality> q = CompareTeacherForced(reference_, model, cases_, path);
    EXPECT_TRUE(q.ok()) << q.status();
    return q.ok() ? *q : WeightQuality{};
  };
  std::map<agents::weights::WeightFormat, double> prefill_kl;
  for (agents::weights::WeightFormat f : {kQ8, kQ4}) {
    const agents::ModelHandle model = load(f);
    ASSERT_NE(model, nullptr);
    prefill_kl[f] = measure(model, ForwardPath::kPrefill).mean_kl;
  }
  for (int64_t target : UsableSimdTargets()) {
    ASSERT_TRUE(ForceSimdTarget(hwy::TargetName(target)).ok());
    for (ForwardPath path : {ForwardPath::kDecodeSteps, ForwardPath::kKernelChunks}) {
      SCOPED_TRACE(ForwardPathName(path) + ", " + hwy::TargetName(target));
      const agents::ModelHandle f32 = load(std::nullopt);
      ASSERT_NE(f32, nullptr);
      const WeightQuality floor = measure(f32, path);
      EXPECT_EQ(floor.positions, 1522);
      // > 0: the kernels ran (their sums round differently from libtorch's;
      // the same path gives bit-identical logits and a KL of exactly 0).
      EXPECT_GT(floor.mean_kl, 0.0);
      EXPECT_LE(floor.mean_kl, 1e-6);
      EXPECT_GE(floor.top1, 0.999);
      for (agents::weights::WeightFormat f : {kQ8, kQ4}) {
        const agents::ModelHandle model = load(f);
        ASSERT_NE(model, nullptr);
        const WeightQuality q = measure(model, path);
        std::printf("%s %s, %s: mean KL %.5f (prefill %.5f), top-1 %.2f%%\n",
                    std::string(agents::weights::WeightFormatName(f)).c_str(),
                    ForwardPathName(path).c_str(), hwy::TargetName(target), q.mean_kl,
                    prefill_kl[f], 100.0 * q.top1);
        EXPECT_EQ(q.positions, 1522);
        EXPECT_GT(q.mean_kl, 0.0);
        if (f == kQ8) {
          EXPECT_LE(q.mean_kl, 0.0003);
          EXPECT_GE(q.top1, 0.99);
          EXPECT_NEAR(q.mean_kl, prefill_kl[f], 0.00003);
        } else {
          EXPECT_LE(q.mean_kl, 0.05);
          EXPECT_LE(q.mean_kl, 1.15 * prefill_kl[f]);
        }
      }
    }
  }
  ASSERT_TRUE(ForceSimdTarget("best").ok());
}

TEST_F(WeightQualityTest, Q8WithinTarget) {
  const WeightQuality q = Measure("q8", "");
  EXPECT_GE(q.positions, 1500);
  EXPECT_GT(q.mean_kl, 0.0);  // the weights really changed
  EXPECT_LE(q.mean_kl, 0.0003);
  EXPECT_GE(q.top1, 0.99);
}

// The embeddings/lm_head format of q4 models, from the runtime's policy.
std::string Q4EmbeddingScheme() {
  const std::optional<agents::weights::BlockFormat> f =
      agents::weights::EmbeddingFormat(agents::weights::BlockFormat::kQ4);
  return f.has_value() ? std::string(agents::weights::BlockFormatName(*f)) : "";
}

TEST_F(WeightQualityTest, Q4WithinTargetAndBeatsQ4_0) {
  const std::string embeddings = Q4EmbeddingScheme();
  EXPECT_EQ(embeddings, "q6");
  const WeightQuality q4 = Measure("q4", embeddings);
  const WeightQuality q4_0 = Measure("q4_0", embeddings);
  EXPECT_LE(q4.mean_kl, 0.05);
  EXPECT_GT(q4.mean_kl, 0.0);
  EXPECT_LE(q4.mean_kl, 0.65 * q4_0.mean_kl);
  EXPECT_GT(q4.top1, q4_0.top1);
}

TEST_F(WeightQualityTest, Q6EmbeddingsCostLittleAndTheSearchPays) {
  const WeightQuality q6 = Measure("q8", "q6");
  const WeightQuality plain = Measure("q8", "q6_0");
  EXPECT_GT(q6.mean_kl, 0.0);
  EXPECT_LE(q6.mean_kl, 0.002);
  EXPECT_LE(q6.mean_kl, 0.8 * plain.mean_kl);
}

TEST(WeightPolicyTest, QuantizesProjectionsOnly) {
  const WeightPolicy stored;
  EXPECT_TRUE(QuantizedByPolicy("model.layers.0.self_attn.q_proj.weight", stored));
  EXPECT_TRUE(QuantizedByPolicy("model.layers.3.mlp.down_proj.weight", stored));
  EXPECT_FALSE(QuantizedByPolicy("model.layers.3.self_attn.q_proj.bias", stored));
  EXPECT_FALSE(QuantizedByPolicy("model.layers.0.input_layernorm.weight", stored));
  EXPECT_FALSE(QuantizedByPolicy("model.embed_tokens.weight", stored));
  EXPECT_FALSE(QuantizedByPolicy("lm_head.weight", stored));
  WeightPolicy q6;
  q6.embeddings = "q6";
  EXPECT_TRUE(QuantizedByPolicy("model.embed_tokens.weight", q6));
  EXPECT_TRUE(QuantizedByPolicy("lm_head.weight", q6));
}

}  // namespace
}  // namespace qkvshare::eval

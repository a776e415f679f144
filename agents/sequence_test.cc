// Golden tests of the runtime against llama2.c run.c on the bundled
// stories260K model (models/stories260K/golden, see its README), plus
// consistency tests (decode vs full forward, chunked vs unchunked prefill)
// on random tiny models of every supported variant.
#include "agents/sequence.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "agents/testing/random_llama.h"
#include "base/cpu_info.h"
#include "gtest/gtest.h"
#include "hwy/targets.h"
#include "nlohmann/json.hpp"

namespace qkvshare::agents {
namespace {

constexpr char kModelDir[] = "models/stories260K";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

ModelHandle LoadModel(const std::string& dir, DType dtype, bool decode_kernels = true) {
  ModelOptions options;
  options.compute_dtype = dtype;
  options.decode_kernels = decode_kernels;
  options.copy_weights_to_huge_pages = false;  // tests count mapped vs copied bytes
  auto model = Model::Load(dir, options);
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? ModelHandle(std::move(*model)) : nullptr;
}

// Greedy: first index of the maximum (run.c's argmax).
int32_t ArgMax(absl::Span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

TEST(SequenceGoldenTest, LogitsMatchRunC) {
  ModelHandle model = LoadModel(kModelDir, DType::kF32);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->copied_weight_bytes(), 0u);  // F32 on disk: used in place
  nlohmann::json golden =
      nlohmann::json::parse(ReadAll(std::string(kModelDir) + "/golden/greedy.json"));
  const nlohmann::json& c = golden["cases"][0];
  ASSERT_EQ(c["prompt"], "Once upon a time");
  std::vector<int32_t> seq = c["prompt_ids"].get<std::vector<int32_t>>();
  for (int32_t id : c["generated_ids"]) seq.push_back(id);
  seq.resize(200);
  std::string raw = ReadAll(std::string(kModelDir) + "/golden/logits_full_once_upon_a_time.f32");
  ASSERT_EQ(raw.size(), 200u * 512 * 4);
  const float* want = reinterpret_cast<const float*>(raw.data());

  for (int chunk : {512, 7}) {  // one chunk, and many (chunked prefill)
    auto s = Sequence::Create(model, {.prefill_chunk_tokens = chunk});
    ASSERT_TRUE(s.ok()) << s.status();
    auto logits = (*s)->Append(seq, LogitsMode::kAll);
    ASSERT_TRUE(logits.ok()) << logits.status();
    ASSERT_EQ(logits->rows, 200);
    ASSERT_EQ(logits->vocab, 512);
    double max_err = 0;
    for (int64_t i = 0; i < 200 * 512; ++i) {
      max_err = std::max(max_err, std::fabs(double{logits->data[i]} - want[i]));
    }
    EXPECT_LT(max_err, 1e-4) << "chunk " << chunk;
    std::printf("chunk %d: max |logit - run.c| = %.3g\n", chunk, max_err);
  }
  // Token by token: the same logits.
  auto s = Sequence::Create(model);
  ASSERT_TRUE(s.ok());
  double max_err = 0;
  for (int p = 0; p < 200; ++p) {
    auto row = (*s)->Decode(seq[p]);
    ASSERT_TRUE(row.ok()) << row.status();
    for (int j = 0; j < 512; ++j) {
      max_err = std::max(max_err, std::fabs(double{(*row)[j]} - want[p * 512 + j]));
    }
  }
  EXPECT_LT(max_err, 1e-4);
  EXPECT_EQ((*s)->token_ids(), seq);
}

TEST(SequenceGoldenTest, GreedyIdsMatchRunC) {
  ModelHandle model = LoadModel(kModelDir, DType::kF32);
  ASSERT_NE(model, nullptr);
  nlohmann::json golden =
      nlohmann::json::parse(ReadAll(std::string(kModelDir) + "/golden/greedy.json"));
  const int steps = golden["steps"];
  for (const nlohmann::json& c : golden["cases"]) {
    SCOPED_TRACE(c["prompt"].get<std::string>());
    std::vector<int32_t> prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    auto s = Sequence::Create(model);
    ASSERT_TRUE(s.ok());
    auto lv = (*s)->Append(prompt);
    ASSERT_TRUE(lv.ok()) << lv.status();
    std::vector<int32_t> generated;
    std::optional<int32_t> stopped;
    int32_t next = ArgMax(lv->row(0));
    // run.c counts positions: prompt_len - 1 + generated <= steps.
    while (true) {
      if (next == 1 || next == 2) {
        stopped = next;
        break;
      }
      generated.push_back(next);
      if (static_cast<int>(prompt.size()) - 1 + static_cast<int>(generated.size()) >= steps) break;
      auto row = (*s)->Decode(next);
      ASSERT_TRUE(row.ok()) << row.status();
      next = ArgMax(*row);
    }
    EXPECT_EQ(generated, c["generated_ids"].get<std::vector<int32_t>>());
    if (c["stopped_on_token"].is_null()) {
      EXPECT_FALSE(stopped.has_value());
    } else {
      EXPECT_EQ(stopped, c["stopped_on_token"].get<int32_t>());
    }
  }
}

// ---------------------------------------------------------------------------
// Consistency on random tiny models of every supported variant.

struct Variant {
  std::string name;
  testing::RandomLlamaSpec spec;
};

void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

std::vector<Variant> Variants() {
  std::vector<Variant> v;
  testing::RandomLlamaSpec base;  // GQA (4 heads, 2 kv heads), untied, F32
  v.push_back({"gqa_untied", base});
  auto tied = base;
  tied.tie = true;
  tied.kv_heads = 1;  // MQA
  v.push_back({"mqa_tied", tied});
  auto qwen = base;
  qwen.model_type = "qwen2";
  v.push_back({"qwen2_bias", qwen});
  auto bias = base;
  bias.attention_bias = true;
  bias.kv_heads = 4;  // MHA
  v.push_back({"llama_attention_bias_mha", bias});
  auto llama3 = base;
  llama3.rope_scaling_json =
      R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64})";
  llama3.rope_theta = 500000.0;
  v.push_back({"llama3_rope", llama3});
  auto linear = base;
  linear.rope_scaling_json = R"({"type": "linear", "factor": 4.0})";
  v.push_back({"linear_rope", linear});
  auto hd = base;
  hd.head_dim = 16;  // q/k/v width 64 != hidden 32
  v.push_back({"head_dim_override", hd});
  auto bf16 = base;
  bf16.weight_dtype = "BF16";
  bf16.shards = 2;
  v.push_back({"bf16_weights_sharded", bf16});
  auto f16 = base;
  f16.weight_dtype = "F16";
  f16.model_type = "mistral";
  v.push_back({"f16_weights_mistral", f16});
  return v;
}

class VariantTest : public ::testing::TestWithParam<Variant> {
 protected:
  static std::vector<int32_t> Ids(int n, int vocab) {
    std::vector<int32_t> ids;
    for (int i = 0; i < n; ++i) ids.push_back((i * 37 + 11) % vocab);
    return ids;
  }
  std::string WriteModel() {
    std::string dir = testing::TempDir(GetParam().name);
    EXPECT_TRUE(testing::WriteRandomLlama(dir, GetParam().spec).ok());
    return dir;
  }
};

std::vector<float> AllLogits(const ModelHandle& model, const std::vector<int32_t>& ids, int chunk) {
  auto s = Sequence::Create(model, {.prefill_chunk_tokens = chunk});
  EXPECT_TRUE(s.ok()) << s.status();
  auto lv = (*s)->Append(ids, LogitsMode::kAll);
  EXPECT_TRUE(lv.ok()) << lv.status();
  return std::vector<float>(lv->data, lv->data + lv->rows * lv->vocab);
}

std::vector<float> DecodeLogits(const ModelHandle& model, const std::vector<int32_t>& ids) {
  auto s = Sequence::Create(model, {.initial_capacity = 4});  // forces cache growth
  EXPECT_TRUE(s.ok()) << s.status();
  std::vector<float> out;
  for (int32_t id : ids) {
    auto row = (*s)->Decode(id);
    EXPECT_TRUE(row.ok()) << row.status();
    out.insert(out.end(), row->begin(), row->end());
  }
  return out;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    m = std::max(m, std::fabs(double{a[i]} - b[i]));
  }
  return m;
}

double MaxAbs(const std::vector<float>& a) {
  double m = 0;
  for (float v : a) m = std::max(m, std::fabs(double{v}));
  return m;
}

TEST_P(VariantTest, DecodeAndChunkedPrefillMatchFullForwardF32) {
  const std::string dir = WriteModel();
  ModelHandle model = LoadModel(dir, DType::kF32);
  ASSERT_NE(model, nullptr);
  const std::vector<int32_t> ids = Ids(40, GetParam().spec.vocab);
  std::vector<float> full = AllLogits(model, ids, 512);
  ASSERT_EQ(full.size(), 40u * GetParam().spec.vocab);
  EXPECT_GT(MaxAbs(full), 1.0);                                 // not degenerate
  EXPECT_LT(MaxAbsDiff(full, DecodeLogits(model, ids)), 1e-4);  // decode kernels
  EXPECT_LT(MaxAbsDiff(full, AllLogits(model, ids, 6)), 1e-4);
  EXPECT_LT(MaxAbsDiff(full, AllLogits(model, ids, 1)), 1e-4);
  for (int64_t target : UsableSimdTargets()) {  // every SIMD target of the kernels
    ASSERT_TRUE(ForceSimdTarget(hwy::TargetName(target)).ok());
    EXPECT_LT(MaxAbsDiff(full, DecodeLogits(model, ids)), 1e-4) << hwy::TargetName(target);
  }
  ASSERT_TRUE(ForceSimdTarget("best").ok());
  // The plain libtorch single-token path.
  ModelHandle torch_path = LoadModel(WriteModel(), DType::kF32, /*decode_kernels=*/false);
  EXPECT_LT(MaxAbsDiff(full, DecodeLogits(torch_path, ids)), 1e-4);
}

// bf16 compute (weights rounded to bf16, bf16 matrix products with fp32
// accumulation, bf16 KV cache) against fp32 compute of the same files.
// Documented bound (docs/runtime.md): max |logit difference| <= 3% of the
// largest |logit|; decode vs full forward within bf16 the same.
TEST_P(VariantTest, Bf16ComputeWithinBound) {
  const std::string dir = WriteModel();
  ModelHandle f32 = LoadModel(dir, DType::kF32);
  ModelHandle bf16 = LoadModel(dir, DType::kBF16);
  ASSERT_NE(f32, nullptr);
  ASSERT_NE(bf16, nullptr);
  if (GetParam().spec.weight_dtype == "BF16") {
    // Only the RMSNorm weights are converted (to fp32); matrices are mapped.
    const auto& s = GetParam().spec;
    EXPECT_EQ(bf16->copied_weight_bytes(), 4u * s.hidden * (2 * s.layers + 1));
  }
  const std::vector<int32_t> ids = Ids(40, GetParam().spec.vocab);
  std::vector<float> ref = AllLogits(f32, ids, 512);
  std::vector<float> full = AllLogits(bf16, ids, 512);
  const double bound = 0.03 * MaxAbs(ref);
  const double full_err = MaxAbsDiff(ref, full);
  const double decode_err = MaxAbsDiff(ref, DecodeLogits(bf16, ids));
  const double chunk_err = MaxAbsDiff(ref, AllLogits(bf16, ids, 7));
  std::printf("%s: bf16 vs f32 max |diff| / max |logit|: full %.4f, decode %.4f, chunked %.4f\n",
              GetParam().name.c_str(), full_err / MaxAbs(ref), decode_err / MaxAbs(ref),
              chunk_err / MaxAbs(ref));
  EXPECT_LT(full_err, bound);
  EXPECT_LT(decode_err, bound);
  EXPECT_LT(chunk_err, bound);
  ModelHandle bf16_torch = LoadModel(dir, DType::kBF16, /*decode_kernels=*/false);
  EXPECT_LT(MaxAbsDiff(ref, DecodeLogits(bf16_torch, ids)), bound);
  EXPECT_LT(MaxAbsDiff(ref, AllLogits(bf16, ids, 7)), bound);
}

// Cross-check against an independent float64 numpy implementation
// (scripts/ref_llama_numpy.py, run offline by scripts/make_numpy_reference.sh):
// qwen2 biases + head_dim override + llama3 RoPE; tied llama with
// attention_bias, MQA, linear RoPE and BF16 weights.
TEST(NumpyReferenceTest, LogitsMatch) {
  nlohmann::json golden = nlohmann::json::parse(ReadAll("agents/testdata/numpy_reference.json"));
  ASSERT_EQ(golden["cases"].size(), 2u);
  for (const nlohmann::json& c : golden["cases"]) {
    SCOPED_TRACE(c["spec"].dump());
    auto spec = testing::RandomLlamaSpecFromJson(c["spec"].dump());
    ASSERT_TRUE(spec.ok()) << spec.status();
    const std::string dir = testing::TempDir("numpy_ref");
    ASSERT_TRUE(testing::WriteRandomLlama(dir, *spec).ok());
    ModelHandle model = LoadModel(dir, DType::kF32);
    ASSERT_NE(model, nullptr);
    std::vector<int32_t> ids = c["result"]["ids"].get<std::vector<int32_t>>();
    std::vector<float> want;
    for (const auto& row : c["result"]["logits"]) {
      for (float v : row) want.push_back(v);
    }
    std::vector<float> got = AllLogits(model, ids, 5);
    EXPECT_LT(MaxAbsDiff(got, want), 1e-4);
    EXPECT_GT(MaxAbs(want), 1.0);
  }
}

// ---------------------------------------------------------------------------
// Truncate, injection, attention capture (on the bundled model, fp32).

std::vector<int32_t> GoldenSequence(int n) {
  nlohmann::json golden =
      nlohmann::json::parse(ReadAll(std::string(kModelDir) + "/golden/greedy.json"));
  std::vector<int32_t> seq = golden["cases"][0]["prompt_ids"].get<std::vector<int32_t>>();
  for (int32_t id : golden["cases"][0]["generated_ids"]) seq.push_back(id);
  seq.resize(n);
  return seq;
}

TEST(SequenceTest, TruncateThenContinue) {
  ModelHandle model = LoadModel(kModelDir, DType::kF32);
  const std::vector<int32_t> ids = GoldenSequence(30);
  std::vector<float> full = AllLogits(model, ids, 512);
  auto s = Sequence::Create(model);
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*s)->Append(ids, LogitsMode::kNone).ok());
  (*s)->Truncate(12);
  EXPECT_EQ((*s)->length(), 12);
  EXPECT_EQ((*s)->token_ids(), std::vector<int32_t>(ids.begin(), ids.begin() + 12));
  auto lv = (*s)->Append(absl::MakeConstSpan(ids).subspan(12), LogitsMode::kAll);
  ASSERT_TRUE(lv.ok());
  std::vector<float> tail(lv->data, lv->data + lv->rows * lv->vocab);
  EXPECT_LT(MaxAbsDiff(tail, std::vector<float>(full.begin() + 12 * 512, full.end())), 1e-4);
  (*s)->Reset();
  EXPECT_EQ((*s)->length(), 0);
  EXPECT_TRUE((*s)->token_ids().empty());
}

// A card-style handoff: copy A's KV cache into B, declare the tokens, and B
// continues exactly as A does.
TEST(SequenceTest, InjectedCacheContinuesIdentically) {
  ModelHandle model = LoadModel(kModelDir, DType::kF32);
  const std::vector<int32_t> ids = GoldenSequence(40);
  auto a = Sequence::Create(model);
  auto b = Sequence::Create(model, {.initial_capacity = 8});
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->Append(absl::MakeConstSpan(ids).first(39), LogitsMode::kNone).ok());
  const KvCache& src = (*a)->kv_cache();
  KvCache& dst = (*b)->kv_cache();
  const int64_t n = src.length();
  ASSERT_TRUE(dst.Reserve(n).ok());
  const KvShape shape = src.shape();
  for (int l = 0; l < shape.num_layers; ++l) {
    for (int h = 0; h < shape.num_kv_heads; ++h) {
      const size_t row = shape.head_dim * sizeof(float);
      std::memcpy(static_cast<char*>(dst.k_data(l)) + h * dst.head_stride() * sizeof(float),
                  static_cast<const char*>(src.k_data(l)) + h * src.head_stride() * sizeof(float),
                  n * row);
      std::memcpy(static_cast<char*>(dst.v_data(l)) + h * dst.head_stride() * sizeof(float),
                  static_cast<const char*>(src.v_data(l)) + h * src.head_stride() * sizeof(float),
                  n * row);
    }
  }
  ASSERT_TRUE(dst.SetLength(n).ok());
  EXPECT_EQ((*b)->SetTokensAfterInjection(absl::MakeConstSpan(ids).first(38)).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*b)->SetTokensAfterInjection(absl::MakeConstSpan(ids).first(39)).ok());
  auto ra = (*a)->Decode(ids[39]);
  ASSERT_TRUE(ra.ok());
  std::vector<float> want(ra->begin(), ra->end());
  auto rb = (*b)->Decode(ids[39]);
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(std::vector<float>(rb->begin(), rb->end()), want);
  EXPECT_EQ((*b)->token_ids(), ids);
}

TEST(SequenceTest, AttentionCapture) {
  ModelHandle model = LoadModel(kModelDir, DType::kF32);
  const std::vector<int32_t> ids = GoldenSequence(14);
  auto s = Sequence::Create(model, {.prefill_chunk_tokens = 3});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ((*s)->GetAttentionCapture().status().code(), absl::StatusCode::kFailedPrecondition);
  (*s)->EnableAttentionCapture(5);
  ASSERT_TRUE((*s)->Append(absl::MakeConstSpan(ids).first(11)).ok());  // 4 chunks
  ASSERT_TRUE((*s)->Decode(ids[11]).ok());
  ASSERT_TRUE((*s)->Decode(ids[12]).ok());
  auto cap = (*s)->GetAttentionCapture();
  ASSERT_TRUE(cap.ok()) << cap.status();
  EXPECT_EQ(cap->num_layers, 5);
  EXPECT_EQ(cap->num_kv_heads, 4);
  EXPECT_EQ(cap->rows, 5);
  EXPECT_EQ(cap->context, 13);
  EXPECT_EQ(cap->query_positions, std::vector<int64_t>({8, 9, 10, 11, 12}));
  for (int l = 0; l < 5; ++l) {
    for (int h = 0; h < 4; ++h) {
      for (int r = 0; r < 5; ++r) {
        double sum = 0;
        for (int c = 0; c < 13; ++c) {
          const float p = cap->at(l, h, r, c);
          EXPECT_GE(p, 0.0f);
          if (c > cap->query_positions[r]) {
            EXPECT_EQ(p, 0.0f);  // causal
          }
          sum += p;
        }
        EXPECT_NEAR(sum, 1.0, 1e-5);
      }
    }
  }
  // The same rows from one unchunked prefill of all 13 tokens.
  auto one = Sequence::Create(model);
  ASSERT_TRUE(one.ok());
  (*one)->EnableAttentionCapture(5);
  ASSERT_TRUE((*one)->Append(absl::MakeConstSpan(ids).first(13)).ok());
  auto cap2 = (*one)->GetAttentionCapture();
  ASSERT_TRUE(cap2.ok());
  EXPECT_EQ(cap2->query_positions, cap->query_positions);
  EXPECT_LT(MaxAbsDiff(cap2->probs, cap->probs), 1e-5);
  EXPECT_GT(MaxAbs(cap->probs), 0.3);  // not uniform

  // A window spanning several query blocks of one long prefill (200 tokens)
  // equals the rows captured token by token.
  const std::vector<int32_t> long_ids = GoldenSequence(200);
  auto whole = Sequence::Create(model);
  auto steps = Sequence::Create(model);
  ASSERT_TRUE(whole.ok() && steps.ok());
  (*whole)->EnableAttentionCapture(150);
  (*steps)->EnableAttentionCapture(150);
  ASSERT_TRUE((*whole)->Append(long_ids, LogitsMode::kNone).ok());
  for (int32_t id : long_ids) ASSERT_TRUE((*steps)->Append({id}, LogitsMode::kNone).ok());
  auto cw = (*whole)->GetAttentionCapture();
  auto cs = (*steps)->GetAttentionCapture();
  ASSERT_TRUE(cw.ok() && cs.ok());
  EXPECT_EQ(cw->rows, 150);
  EXPECT_EQ(cw->query_positions, cs->query_positions);
  EXPECT_LT(MaxAbsDiff(cw->probs, cs->probs), 1e-5);

  // Truncate drops the rows of removed positions; the export pads with 0.
  (*s)->Truncate(11);
  cap = (*s)->GetAttentionCapture();
  EXPECT_EQ(cap->query_positions, std::vector<int64_t>({8, 9, 10}));
  EXPECT_EQ(cap->context, 11);
  (*s)->DisableAttentionCapture();
  EXPECT_FALSE((*s)->GetAttentionCapture().ok());
}

INSTANTIATE_TEST_SUITE_P(AllVariants, VariantTest, ::testing::ValuesIn(Variants()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace qkvshare::agents

// Model loading: bad input (each error's code and the file/tensor named in
// its message), weight sharing through ModelRegistry, Sequence input errors.
#include "agents/model.h"

#include <string>
#include <vector>

#include "agents/model_registry.h"
#include "agents/sequence.h"
#include "agents/testing/random_llama.h"
#include "gtest/gtest.h"

namespace qkvshare::agents {
namespace {

using testing::RandomLlamaSpec;
using testing::TensorData;

// Writes a valid random model, then replaces its weights with `tensors`.
std::string ModelWithTensors(const std::string& name, std::vector<TensorData> tensors) {
  std::string dir = testing::TempDir(name);
  EXPECT_TRUE(testing::WriteRandomLlama(dir, RandomLlamaSpec()).ok());
  EXPECT_TRUE(
      testing::WriteFile(dir + "/model.safetensors", testing::EncodeSafetensors(tensors)).ok());
  return dir;
}

void ExpectError(const absl::Status& status, absl::StatusCode code,
                 const std::vector<std::string>& needles) {
  EXPECT_EQ(status.code(), code) << status;
  for (const std::string& n : needles) {
    EXPECT_NE(status.message().find(n), std::string::npos) << "'" << n << "' not in " << status;
  }
}

TEST(ModelLoadTest, LoadsBundledModel) {
  ModelOptions mapped;
  mapped.copy_weights_to_huge_pages = false;
  auto model = Model::Load("models/stories260K", mapped);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->compute_dtype(), DType::kF32);  // auto: F32 on disk
  EXPECT_EQ((*model)->weights_dtype(), DType::kF32);
  EXPECT_EQ((*model)->config().num_layers, 5);
  EXPECT_EQ((*model)->mapped_weight_bytes(), 260032u * 4);
  EXPECT_EQ((*model)->copied_weight_bytes(), 0u);
  EXPECT_EQ((*model)->fingerprint().Hex().size(), 64u);
}

TEST(ModelLoadTest, HugePageCopiesGiveIdenticalLogits) {
  ModelOptions copy;
  copy.copy_weights_to_huge_pages = true;
  auto copied = Model::Load("models/stories260K", copy);
  ModelOptions in_place;
  in_place.copy_weights_to_huge_pages = false;
  auto mapped = Model::Load("models/stories260K", in_place);
  ASSERT_TRUE(copied.ok() && mapped.ok());
  EXPECT_EQ((*copied)->mapped_weight_bytes(), 0u);
  EXPECT_EQ((*copied)->copied_weight_bytes(), 260032u * 4);
  EXPECT_EQ((*copied)->fingerprint(), (*mapped)->fingerprint());
  std::vector<int32_t> ids = {1, 403, 407, 261, 378};
  auto a = Sequence::Create(ModelHandle(std::move(*copied)));
  auto b = Sequence::Create(ModelHandle(std::move(*mapped)));
  ASSERT_TRUE(a.ok() && b.ok());
  auto la = (*a)->Append(ids, LogitsMode::kAll);
  ASSERT_TRUE(la.ok());
  std::vector<float> va(la->data, la->data + la->rows * la->vocab);
  auto lb = (*b)->Append(ids, LogitsMode::kAll);
  ASSERT_TRUE(lb.ok());
  EXPECT_EQ(va, std::vector<float>(lb->data, lb->data + lb->rows * lb->vocab));
}

TEST(ModelLoadTest, BadConfig) {
  std::string dir = testing::TempDir("no_config");
  ExpectError(Model::Load(dir).status(), absl::StatusCode::kNotFound, {dir, "config.json"});

  ASSERT_TRUE(testing::WriteRandomLlama(dir, RandomLlamaSpec()).ok());
  ASSERT_TRUE(testing::WriteFile(dir + "/config.json", "{\"model_type\": ").ok());
  ExpectError(Model::Load(dir).status(), absl::StatusCode::kInvalidArgument,
              {dir + "/config.json", "invalid JSON"});

  RandomLlamaSpec phi;
  phi.model_type = "phi3";
  ASSERT_TRUE(testing::WriteRandomLlama(dir, phi).ok());
  ExpectError(Model::Load(dir).status(), absl::StatusCode::kInvalidArgument,
              {"config.json", "model_type", "phi3"});

  RandomLlamaSpec yarn;
  yarn.rope_scaling_json = R"({"rope_type": "yarn", "factor": 4.0})";
  ASSERT_TRUE(testing::WriteRandomLlama(dir, yarn).ok());
  ExpectError(Model::Load(dir).status(), absl::StatusCode::kInvalidArgument,
              {"config.json", "rope_scaling", "yarn"});
}

TEST(ModelLoadTest, BadWeights) {
  std::vector<TensorData> good = testing::RandomLlamaTensors(RandomLlamaSpec());

  // A missing tensor.
  std::vector<TensorData> missing;
  for (const TensorData& t : good) {
    if (t.name != "model.layers.1.mlp.up_proj.weight") missing.push_back(t);
  }
  ExpectError(Model::Load(ModelWithTensors("missing", missing)).status(),
              absl::StatusCode::kNotFound, {"model.layers.1.mlp.up_proj.weight", "not found"});

  // Untied model without lm_head.weight.
  std::vector<TensorData> no_head(good.begin(), good.end() - 1);
  ASSERT_EQ(good.back().name, "lm_head.weight");
  ExpectError(Model::Load(ModelWithTensors("no_head", no_head)).status(),
              absl::StatusCode::kNotFound, {"lm_head.weight"});

  // A wrong shape.
  std::vector<TensorData> shape = good;
  for (TensorData& t : shape) {
    if (t.name == "model.layers.0.self_attn.k_proj.weight") {
      t.shape = {8, 64};  // same element count, wrong shape
    }
  }
  ExpectError(
      Model::Load(ModelWithTensors("shape", shape)).status(), absl::StatusCode::kInvalidArgument,
      {"model.safetensors", "model.layers.0.self_attn.k_proj.weight", "[8, 64]", "[16, 32]"});

  // An unknown dtype, and a known one the runtime cannot compute with.
  std::vector<TensorData> dtype = good;
  dtype[3].dtype = "Q4";
  ExpectError(Model::Load(ModelWithTensors("dtype", dtype)).status(),
              absl::StatusCode::kInvalidArgument, {"model.safetensors", dtype[3].name, "Q4"});
  dtype[3].dtype = "I32";
  ExpectError(Model::Load(ModelWithTensors("dtype2", dtype)).status(),
              absl::StatusCode::kInvalidArgument, {"model.safetensors", dtype[3].name, "I32"});

  // A truncated file.
  std::string bytes = testing::EncodeSafetensors(good);
  std::string dir = ModelWithTensors("truncated", good);
  ASSERT_TRUE(
      testing::WriteFile(dir + "/model.safetensors", bytes.substr(0, bytes.size() / 2)).ok());
  ExpectError(Model::Load(dir).status(), absl::StatusCode::kInvalidArgument,
              {dir + "/model.safetensors", "truncated"});

  // No weights at all.
  ASSERT_EQ(std::remove((dir + "/model.safetensors").c_str()), 0);
  ExpectError(Model::Load(dir).status(), absl::StatusCode::kNotFound, {"model.safetensors"});
}

TEST(ModelLoadTest, UnsupportedComputeDtype) {
  ExpectError(Model::Load("models/stories260K", {DType::kF16}).status(),
              absl::StatusCode::kInvalidArgument, {"f16"});
}

TEST(SequenceInputTest, BadTokenIdsAndContextLimit) {
  auto model = Model::Load("models/stories260K");
  ASSERT_TRUE(model.ok());
  ModelHandle handle = std::move(*model);
  auto seq = Sequence::Create(handle);
  ASSERT_TRUE(seq.ok());
  Sequence& s = **seq;
  ASSERT_TRUE(s.Append(std::vector<int32_t>{1, 403}).ok());

  ExpectError(s.Append(std::vector<int32_t>{5, 512}).status(), absl::StatusCode::kInvalidArgument,
              {"token id 512", "index 1", "models/stories260K"});
  ExpectError(s.Append(std::vector<int32_t>{-3}).status(), absl::StatusCode::kInvalidArgument,
              {"token id -3", "index 0"});
  ExpectError(s.Decode(100000).status(), absl::StatusCode::kInvalidArgument, {"token id 100000"});
  // 2 + 511 > 512 (max_position_embeddings).
  ExpectError(s.Append(std::vector<int32_t>(511, 5)).status(), absl::StatusCode::kOutOfRange,
              {"context limit of 512"});
  EXPECT_EQ(s.length(), 2);  // errors change nothing
  EXPECT_EQ(s.token_ids(), std::vector<int32_t>({1, 403}));
  EXPECT_TRUE(s.Append(std::vector<int32_t>(510, 5), LogitsMode::kNone).ok());
  EXPECT_EQ(s.length(), 512);
  ExpectError(s.Decode(5).status(), absl::StatusCode::kOutOfRange, {"context limit"});

  auto small = Sequence::Create(handle, {.max_tokens = 16});
  ASSERT_TRUE(small.ok());
  ExpectError((*small)->Append(std::vector<int32_t>(17, 5)).status(), absl::StatusCode::kOutOfRange,
              {"context limit of 16"});
  EXPECT_EQ(Sequence::Create(handle, {.max_tokens = 513}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Sequence::Create(handle, {.prefill_chunk_tokens = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Sequence::Create(nullptr).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelRegistryTest, SharesWeightsAndUnloads) {
  ModelRegistry registry;
  std::string dir = testing::TempDir("registry");
  ASSERT_TRUE(testing::WriteRandomLlama(dir, RandomLlamaSpec()).ok());
  auto a = registry.Acquire(dir);
  auto b = registry.Acquire(dir + "/");           // same directory, other spelling
  auto c = registry.Acquire(dir, {DType::kF32});  // auto resolved to f32 above
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->get(), b->get());
  EXPECT_EQ(a->get(), c->get());
  EXPECT_EQ(a->use_count(), 3);
  EXPECT_EQ(registry.num_loaded(), 1);

  auto bf16 = registry.Acquire(dir, {DType::kBF16});  // another weight set
  ASSERT_TRUE(bf16.ok());
  EXPECT_NE(bf16->get(), a->get());
  EXPECT_EQ(registry.num_loaded(), 2);

  {
    auto seq = Sequence::Create(*a);  // a Sequence holds a handle too
    ASSERT_TRUE(seq.ok());
    EXPECT_EQ(a->use_count(), 4);
    a->reset();
    b->reset();
    c->reset();
    EXPECT_EQ(registry.num_loaded(), 2);  // the sequence keeps the model
  }
  EXPECT_EQ(registry.num_loaded(), 1);
  bf16->reset();
  EXPECT_EQ(registry.num_loaded(), 0);

  auto again = registry.Acquire(dir);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(registry.num_loaded(), 1);
  EXPECT_EQ(registry.Acquire("/nonexistent/model").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace qkvshare::agents

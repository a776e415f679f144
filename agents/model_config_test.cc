#include "agents/model_config.h"

#include <string>

#include "gtest/gtest.h"

namespace qkvshare::agents {
namespace {

constexpr char kBase[] = R"({
  "model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
  "num_hidden_layers": 5, "num_attention_heads": 8, "num_key_value_heads": 4,
  "vocab_size": 512, "max_position_embeddings": 512, "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0, "rope_scaling": null, "tie_word_embeddings": true,
  "bos_token_id": 1, "eos_token_id": 2 %s})";

std::string Config(const std::string& extra) {
  std::string s = kBase;
  return s.replace(s.find("%s"), 2, extra);
}

absl::StatusCode Code(const std::string& json) {
  return ModelConfig::FromJson(json, "cfg.json").status().code();
}

TEST(ModelConfigTest, ParsesBundledModel) {
  auto c = ModelConfig::FromDirectory("models/stories260K");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, ModelArch::kLlama);
  EXPECT_EQ(c->hidden_size, 64);
  EXPECT_EQ(c->intermediate_size, 172);
  EXPECT_EQ(c->num_layers, 5);
  EXPECT_EQ(c->num_heads, 8);
  EXPECT_EQ(c->num_kv_heads, 4);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->group_size(), 2);
  EXPECT_EQ(c->vocab_size, 512);
  EXPECT_EQ(c->context_limit(), 512);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_EQ(c->bos_token_id, 1);
  EXPECT_EQ(c->eos_token_ids, std::vector<int32_t>({2}));
  // generation_config.json overrides the eos list.
  EXPECT_EQ(c->generation.eos_token_ids, std::vector<int32_t>({2, 1}));
  EXPECT_EQ(c->generation.max_length, 512);
  EXPECT_EQ(c->kv_shape(), (KvShape{5, 4, 8}));
}

TEST(ModelConfigTest, DefaultsAndOverrides) {
  auto c = ModelConfig::FromJson(Config(R"(, "head_dim": 16)"), "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->head_dim, 16);
  // No generation_config: eos from config.json.
  EXPECT_EQ(c->generation.eos_token_ids, std::vector<int32_t>({2}));

  auto q = ModelConfig::FromJson(
      R"({"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "vocab_size": 100, "eos_token_id": [5, 6], "use_sliding_window": false,
          "sliding_window": 32})",
      "q.json");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->arch, ModelArch::kQwen2);
  EXPECT_TRUE(q->qkv_bias);
  EXPECT_FALSE(q->o_bias);
  EXPECT_EQ(q->head_dim, 16);
  EXPECT_EQ(q->max_position_embeddings, 32768);
  EXPECT_FALSE(q->sliding_window.has_value());
  EXPECT_EQ(q->eos_token_ids, std::vector<int32_t>({5, 6}));

  auto m = ModelConfig::FromJson(
      R"({"model_type": "mistral", "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100,
          "max_position_embeddings": 1024, "sliding_window": 512})",
      "m.json");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->num_kv_heads, 4);  // defaults to num_attention_heads
  EXPECT_EQ(m->context_limit(), 512);

  auto b = ModelConfig::FromJson(Config(R"(, "attention_bias": true, "mlp_bias": true)"), "b");
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->qkv_bias && b->o_bias && b->mlp_bias);
}

TEST(ModelConfigTest, RopeScaling) {
  std::string linear = Config("");
  linear.replace(linear.find("\"rope_scaling\": null"), 20,
                 R"("rope_scaling": {"type": "linear", "factor": 4})");
  auto lin = ModelConfig::FromJson(linear, "cfg.json");
  ASSERT_TRUE(lin.ok()) << lin.status();
  EXPECT_EQ(lin->rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_EQ(lin->rope_scaling.factor, 4.0);

  std::string l3 = R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 64,
      "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 10,
      "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})";
  auto c = ModelConfig::FromJson(l3, "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);

  std::string yarn = l3;
  yarn.replace(yarn.find("llama3"), 6, "yarn");
  auto y = ModelConfig::FromJson(yarn, "cfg.json");
  EXPECT_EQ(y.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(y.status().message().find("rope_scaling"), std::string::npos);
  EXPECT_NE(y.status().message().find("yarn"), std::string::npos);
}

TEST(ModelConfigTest, Rejects) {
  EXPECT_EQ(Code("{not json"), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Code("[1, 2]"), absl::StatusCode::kInvalidArgument);
  auto gpt = ModelConfig::FromJson(R"({"model_type": "gpt2", "hidden_size": 64, "vocab_size": 10})",
                                   "/m/config.json");
  EXPECT_EQ(gpt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(gpt.status().message().find("/m/config.json"), std::string::npos);
  EXPECT_NE(gpt.status().message().find("gpt2"), std::string::npos);
  EXPECT_EQ(Code(Config(R"(, "hidden_act": "gelu")")), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Code(Config(R"(, "head_dim": 7)")), absl::StatusCode::kInvalidArgument);
  std::string no_hidden = Config("");
  no_hidden.replace(no_hidden.find("\"hidden_size\": 64,"), 18, "");
  auto missing = ModelConfig::FromJson(no_hidden, "cfg.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("'hidden_size'"), std::string::npos);
  std::string bad_kv = Config("");
  bad_kv.replace(bad_kv.find("\"num_key_value_heads\": 4"), 24, "\"num_key_value_heads\": 3");
  EXPECT_EQ(Code(bad_kv), absl::StatusCode::kInvalidArgument);
  std::string neg = Config("");
  neg.replace(neg.find("\"vocab_size\": 512"), 17, "\"vocab_size\": -1");
  EXPECT_EQ(Code(neg), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ModelConfig::FromDirectory("/nonexistent/model").status().code(),
            absl::StatusCode::kNotFound);
  // eos id beyond the vocabulary.
  auto eos =
      ModelConfig::FromJson(Config(""), "cfg.json", R"({"eos_token_id": [2, 900]})", "gen.json");
  EXPECT_EQ(eos.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(eos.status().message().find("gen.json"), std::string::npos);
}

}  // namespace
}  // namespace qkvshare::agents

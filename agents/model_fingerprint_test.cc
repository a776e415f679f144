#include "agents/model_fingerprint.h"

#include <string>

#include "agents/file_util.h"
#include "agents/testing/random_llama.h"
#include "gtest/gtest.h"

namespace qkvshare::agents {
namespace {

absl::StatusOr<ModelFingerprint> Fingerprint(const std::string& dir) {
  auto config = ModelConfig::FromDirectory(dir);
  if (!config.ok()) return config.status();
  auto weights = WeightFiles::Open(dir);
  if (!weights.ok()) return weights.status();
  std::string tokenizer;
  if (PathExists(dir + "/tokenizer.json")) tokenizer = *ReadFileToString(dir + "/tokenizer.json");
  return ComputeModelFingerprint(*config, tokenizer, **weights);
}

TEST(ModelFingerprintTest, BundledModelMatchesIndependentImplementation) {
  auto fp = Fingerprint("models/stories260K");
  ASSERT_TRUE(fp.ok()) << fp.status();
  // `python3 scripts/model_fingerprint.py models/stories260K` (hashlib).
  EXPECT_EQ(fp->Hex(), "e8330aedd1e006cb66549f7928e8f1f0ef08e677bf96a67cfd08b92643cf5d36");
  auto config = ModelConfig::FromDirectory("models/stories260K");
  EXPECT_EQ(FingerprintConfigText(*config),
            "model_type=llama;layers=5;heads=8;kv_heads=4;head_dim=8;rope_theta=10000;"
            "rope_scaling=none");
}

TEST(ModelFingerprintTest, SensitiveToWhatMatters) {
  testing::RandomLlamaSpec spec;
  std::string a = testing::TempDir("fp_a");
  ASSERT_TRUE(testing::WriteRandomLlama(a, spec).ok());
  auto base = Fingerprint(a);
  ASSERT_TRUE(base.ok()) << base.status();

  std::string same = testing::TempDir("fp_same");  // identical files
  ASSERT_TRUE(testing::WriteRandomLlama(same, spec).ok());
  EXPECT_EQ(*Fingerprint(same), *base);

  std::string sharded = testing::TempDir("fp_sharded");  // same tensors, 2 shards
  spec.shards = 2;
  ASSERT_TRUE(testing::WriteRandomLlama(sharded, spec).ok());
  EXPECT_EQ(*Fingerprint(sharded), *base);
  spec.shards = 1;

  auto differs = [&](testing::RandomLlamaSpec changed, const char* what) {
    std::string dir = testing::TempDir("fp_changed");
    ASSERT_TRUE(testing::WriteRandomLlama(dir, changed).ok());
    auto fp = Fingerprint(dir);
    ASSERT_TRUE(fp.ok()) << fp.status();
    EXPECT_NE(*fp, *base) << what;
  };
  testing::RandomLlamaSpec s = spec;
  s.seed = 2;
  differs(s, "weights");
  s = spec;
  s.rope_theta = 20000.0;
  differs(s, "rope_theta");
  s = spec;
  s.rope_scaling_json = R"({"type": "linear", "factor": 2.0})";
  differs(s, "rope_scaling");
  s = spec;
  s.weight_dtype = "BF16";
  differs(s, "dtype");
  s = spec;
  s.tokenizer_json_path = "models/stories260K/tokenizer.json";
  differs(s, "tokenizer");
}

// GGUF files: the digest covers the file's tensors (type, dims, bytes) and
// the tokenizer text, and never equals the HF checkpoint's.
TEST(ModelFingerprintTest, GgufFiles) {
  auto config = ModelConfig::FromDirectory("models/stories260K");
  ASSERT_TRUE(config.ok()) << config.status();
  auto fp = [&](const std::string& type, std::string_view tokenizer) {
    auto file = gguf::GgufFile::Open("agents/gguf/testdata/stories260K-" + type + ".gguf");
    EXPECT_TRUE(file.ok()) << file.status();
    auto f = ComputeGgufModelFingerprint(*config, tokenizer, **file);
    EXPECT_TRUE(f.ok()) << f.status();
    return f.ok() ? *f : ModelFingerprint{};
  };
  const ModelFingerprint f32 = fp("F32", "tok");
  EXPECT_EQ(f32, fp("F32", "tok"));
  EXPECT_NE(f32, fp("F32", "other tok"));
  EXPECT_NE(f32, fp("F16", "tok"));
  EXPECT_NE(fp("Q8_0", "tok"), fp("Q4_0", "tok"));
  EXPECT_NE(fp("Q4_0", "tok"), fp("Q4_1", "tok"));
  auto hf = Fingerprint("models/stories260K");
  ASSERT_TRUE(hf.ok()) << hf.status();
  EXPECT_NE(f32, *hf);
}

}  // namespace
}  // namespace qkvshare::agents

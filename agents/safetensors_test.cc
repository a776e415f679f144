#include "agents/safetensors.h"

#include <cstring>
#include <string>

#include "agents/testing/random_llama.h"
#include "gtest/gtest.h"

namespace qkvshare::agents {
namespace {

using testing::EncodeSafetensors;
using testing::TempDir;
using testing::TensorData;
using testing::WriteFile;

std::string WriteTemp(const std::string& bytes) {
  std::string path = TempDir("st") + "/model.safetensors";
  EXPECT_TRUE(WriteFile(path, bytes).ok());
  return path;
}

// A file whose header is `header` (padded) followed by `data_bytes` zeros.
std::string RawFile(std::string header, size_t data_bytes) {
  while (header.size() % 8) header += ' ';
  std::string out(8, '\0');
  uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + std::string(data_bytes, '\0');
}

void ExpectInvalid(const std::string& bytes, const std::string& needle) {
  auto f = SafetensorsFile::Open(WriteTemp(bytes));
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << f.status();
  EXPECT_NE(f.status().message().find(needle), std::string::npos) << f.status();
  EXPECT_NE(f.status().message().find("model.safetensors"), std::string::npos) << f.status();
}

TEST(SafetensorsTest, ReadsAllDtypes) {
  std::vector<TensorData> tensors = {
      {"a", "F32", {2, 3}, {1, 2, 3, 4, 5, 6}},
      {"b", "BF16", {3}, {1.0f, -2.5f, 0.15625f}},
      {"c", "F16", {2}, {0.5f, -65504.0f}},
  };
  std::string path = WriteTemp(EncodeSafetensors(tensors));
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 3u);
  const TensorInfo& a = (*f)->tensors()[0];
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.dtype, DType::kF32);
  EXPECT_EQ(a.shape, std::vector<int64_t>({2, 3}));
  EXPECT_EQ(a.nbytes, 24u);
  EXPECT_EQ(static_cast<const float*>(a.data)[5], 6.0f);
  const TensorInfo& b = (*f)->tensors()[1];
  EXPECT_EQ(b.dtype, DType::kBF16);
  const auto* bb = static_cast<const uint16_t*>(b.data);
  EXPECT_EQ(Bf16ToFloat(bb[0]), 1.0f);
  EXPECT_EQ(Bf16ToFloat(bb[1]), -2.5f);
  EXPECT_EQ(Bf16ToFloat(bb[2]), 0.15625f);
  const TensorInfo& c = (*f)->tensors()[2];
  EXPECT_EQ(c.dtype, DType::kF16);
  const auto* cc = static_cast<const uint16_t*>(c.data);
  EXPECT_EQ(cc[0], 0x3800);  // 0.5
  EXPECT_EQ(cc[1], 0xfbff);  // -65504
}

TEST(SafetensorsTest, RejectsBadFiles) {
  ExpectInvalid("abc", "truncated");
  std::string good = EncodeSafetensors({{"w", "F32", {4, 4}, std::vector<float>(16, 1.0f)}});
  ExpectInvalid(good.substr(0, good.size() - 4), "outside");  // data cut short
  ExpectInvalid(good.substr(0, 20), "header length");         // header cut short
  ExpectInvalid(
      RawFile("{\"w\": {\"dtype\": \"Q4\", \"shape\": [2], \"data_offsets\": [0, 2]}}", 2),
      "unknown dtype 'Q4'");
  ExpectInvalid(
      RawFile("{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8),
      "tensor 'w'");
  ExpectInvalid(RawFile("{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                        " \"y\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                        12),
                "overlap");
  ExpectInvalid(
      RawFile("{\"w\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8),
      "bad shape");
  ExpectInvalid(RawFile("not json", 0), "JSON");
  EXPECT_EQ(SafetensorsFile::Open("/nonexistent.safetensors").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, WeightFilesSingleAndSharded) {
  testing::RandomLlamaSpec spec;
  for (int shards : {1, 3}) {
    spec.shards = shards;
    std::string dir = TempDir("wf");
    ASSERT_TRUE(testing::WriteRandomLlama(dir, spec).ok());
    auto w = WeightFiles::Open(dir);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ((*w)->files().size(), static_cast<size_t>(shards));
    // embed, 2 layers x 9, norm, lm_head.
    EXPECT_EQ((*w)->tensors().size(), 1u + 2 * 9 + 1 + 1);
    auto q = (*w)->Get("model.layers.1.self_attn.q_proj.weight", {32, 32});
    ASSERT_TRUE(q.ok()) << q.status();
    EXPECT_EQ((*q)->dtype, DType::kF32);

    auto missing = (*w)->Get("model.layers.7.mlp.up_proj.weight", {48, 32});
    EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
    EXPECT_NE(missing.status().message().find("model.layers.7.mlp.up_proj.weight"),
              std::string::npos);
    auto shape = (*w)->Get("model.norm.weight", {33});
    EXPECT_EQ(shape.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(shape.status().message().find("[32]"), std::string::npos) << shape.status();
    EXPECT_NE(shape.status().message().find(".safetensors"), std::string::npos);
  }
  // An index naming a tensor its shard does not hold.
  std::string dir = TempDir("wf_bad");
  spec.shards = 2;
  ASSERT_TRUE(testing::WriteRandomLlama(dir, spec).ok());
  ASSERT_TRUE(WriteFile(dir + "/model.safetensors.index.json",
                        R"({"weight_map": {"ghost.weight": "model-1-of-2.safetensors"}})")
                  .ok());
  auto bad = WeightFiles::Open(dir);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("ghost.weight"), std::string::npos);
  EXPECT_EQ(WeightFiles::Open(TempDir("empty")).status().code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, UnsupportedDtypeOnlyWhenUsed) {
  std::string path = WriteTemp(
      RawFile("{\"ids\": {\"dtype\": \"I64\", \"shape\": [1], \"data_offsets\": [0, 8]}}", 8));
  std::string dir = path.substr(0, path.rfind('/'));
  auto w = WeightFiles::Open(dir);
  ASSERT_TRUE(w.ok()) << w.status();
  auto t = (*w)->Get("ids", {1});
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("I64"), std::string::npos);
}

}  // namespace
}  // namespace qkvshare::agents

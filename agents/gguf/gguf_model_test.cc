#include "agents/gguf/gguf_model.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agents/gguf/gguf_dequant.h"
#include "agents/gguf/gguf_file.h"
#include "agents/model_config.h"
#include "agents/safetensors.h"
#include "agents/weights/block_formats.h"
#include "agents/weights/quantized_matrix.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "quant/fp16.h"

namespace qkvshare::agents::gguf {
namespace {

using ::testing::HasSubstr;

constexpr char kModelDir[] = "models/stories260K";

std::shared_ptr<const GgufFile> Open(const std::string& type) {
  auto file = GgufFile::Open("agents/gguf/testdata/stories260K-" + type + ".gguf");
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? std::shared_ptr<const GgufFile>(*std::move(file)) : nullptr;
}

std::vector<float> Floats(const TensorInfo& t) {
  std::vector<float> out(t.numel());
  const auto* p = static_cast<const uint8_t*>(t.data);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (*t.dtype == DType::kF32) {
      std::memcpy(&out[i], p + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      out[i] = *t.dtype == DType::kF16 ? quant::HalfToFloat(h) : Bf16ToFloat(h);
    }
  }
  return out;
}

TEST(GgufModelTest, ConfigEqualsTheHfConfig) {
  auto file = Open("F32");
  ASSERT_NE(file, nullptr);
  auto c = ConfigFromGguf(*file);
  ASSERT_TRUE(c.ok()) << c.status();
  auto hf = ModelConfig::FromDirectory(kModelDir);
  ASSERT_TRUE(hf.ok()) << hf.status();
  EXPECT_EQ(c->arch, hf->arch);
  EXPECT_EQ(c->hidden_size, hf->hidden_size);
  EXPECT_EQ(c->intermediate_size, hf->intermediate_size);
  EXPECT_EQ(c->num_layers, hf->num_layers);
  EXPECT_EQ(c->num_heads, hf->num_heads);
  EXPECT_EQ(c->num_kv_heads, hf->num_kv_heads);
  EXPECT_EQ(c->head_dim, hf->head_dim);
  EXPECT_EQ(c->vocab_size, hf->vocab_size);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, hf->rms_norm_eps);
  EXPECT_EQ(c->rope_theta, hf->rope_theta);
  EXPECT_EQ(c->max_position_embeddings, hf->max_position_embeddings);
  EXPECT_EQ(c->tie_word_embeddings, hf->tie_word_embeddings);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_EQ(c->bos_token_id, hf->bos_token_id);
  EXPECT_EQ(c->eos_token_ids, std::vector<int32_t>{2});
}

TEST(GgufModelTest, NativeLayerFormats) {
  EXPECT_EQ(NativeLayerFormat(*Open("F32")), std::nullopt);
  EXPECT_EQ(NativeLayerFormat(*Open("F16")), std::nullopt);
  EXPECT_EQ(NativeLayerFormat(*Open("Q8_0")), weights::BlockFormat::kQ8);
  EXPECT_EQ(NativeLayerFormat(*Open("Q4_0")), weights::BlockFormat::kQ4);
  EXPECT_EQ(NativeLayerFormat(*Open("Q4_1")), weights::BlockFormat::kQ4);
}

// F32: every tensor, q/k included (permutation undone), equals the HF
// checkpoint bit for bit; F16: equals it rounded to fp16.
TEST(GgufModelTest, DenseWeightsEqualTheCheckpoint) {
  auto hf = WeightFiles::Open(kModelDir);
  ASSERT_TRUE(hf.ok()) << hf.status();
  for (const std::string type : {"F32", "F16"}) {
    auto file = Open(type);
    ASSERT_NE(file, nullptr);
    auto c = ConfigFromGguf(*file);
    ASSERT_TRUE(c.ok());
    auto w = WeightsFromGguf(file, *c, std::nullopt);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_TRUE((*w)->quantized().empty());
    EXPECT_EQ((*w)->tensors().size(), (*hf)->tensors().size()) << type;
    for (const auto& [name, want] : (*hf)->tensors()) {
      const TensorInfo* got = (*w)->Find(name);
      ASSERT_NE(got, nullptr) << type << " " << name;
      EXPECT_EQ(got->shape, want->shape) << name;
      const std::vector<float> a = Floats(*got), b = Floats(*want);
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i) {
        const float expect = type == "F32" || got->dtype == DType::kF32
                                 ? b[i]
                                 : quant::HalfToFloat(quant::FloatToHalf(b[i]));
        ASSERT_EQ(a[i], expect) << type << " " << name << " [" << i << "]";
      }
    }
  }
}

// Q8_0 / Q4_0 / Q4_1 projections become q8 / q4 matrices whose values are
// exactly the file's (ggml's decoder), rows un-permuted; ffn_down (F16 in
// these files) and the Q8_0 embedding are handed over dense.
TEST(GgufModelTest, QuantizedProjectionsKeepTheFilesBlocks) {
  struct Case {
    std::string type;
    weights::BlockFormat format;
  };
  auto hf = WeightFiles::Open(kModelDir);
  ASSERT_TRUE(hf.ok()) << hf.status();
  for (const Case& k :
       {Case{"Q8_0", weights::BlockFormat::kQ8}, Case{"Q4_0", weights::BlockFormat::kQ4},
        Case{"Q4_1", weights::BlockFormat::kQ4}}) {
    auto file = Open(k.type);
    ASSERT_NE(file, nullptr);
    auto c = ConfigFromGguf(*file);
    ASSERT_TRUE(c.ok());
    auto w = WeightsFromGguf(file, *c, k.format);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ((*w)->quantized().size(), 35u) << k.type;  // 7 per layer
    // ffn_down is F16 in these files: quantized here with the runtime's own
    // quantizer, as QuantizeRows would from the f16 values.
    const std::string down_name = "model.layers.0.mlp.down_proj.weight";
    EXPECT_EQ((*w)->Find(down_name), nullptr);
    const weights::QuantizedMatrix* down = (*w)->FindQuantized(down_name);
    ASSERT_NE(down, nullptr);
    const GgufTensor* down_f16 = file->FindTensor("blk.0.ffn_down.weight");
    ASSERT_EQ(down_f16->type, GgmlType::kF16);
    weights::QuantizedMatrix own(k.format, down->rows(), down->cols());
    ASSERT_TRUE(own.QuantizeRows(down_f16->data, DType::kF16, 0, down->rows()).ok());
    std::vector<uint8_t> a(weights::BlockBytes(k.format) * down->blocks_per_row()), b(a.size());
    for (int64_t r = 0; r < down->rows(); ++r) {
      down->GetRowBlocks(r, a.data());
      own.GetRowBlocks(r, b.data());
      ASSERT_EQ(a, b) << k.type << " ffn_down row " << r;
    }
    const TensorInfo* embed = (*w)->Find("model.embed_tokens.weight");
    ASSERT_NE(embed, nullptr);
    EXPECT_EQ(embed->dtype, DType::kF32);  // decoded Q8_0
    for (const char* proj : {"q_proj", "k_proj", "v_proj"}) {
      const std::string name = std::string("model.layers.2.self_attn.") + proj + ".weight";
      const weights::QuantizedMatrix* q = (*w)->FindQuantized(name);
      ASSERT_NE(q, nullptr) << name;
      EXPECT_EQ(q->format(), k.format);
      const TensorInfo* ref = (*hf)->Find(name);
      const std::vector<float> want = Floats(*ref);
      const int64_t cols = q->cols();
      std::vector<uint8_t> blocks(weights::BlockBytes(k.format) * q->blocks_per_row());
      std::vector<float> row(cols);
      // Row r of the runtime's matrix, dequantized by the scalar reference.
      auto dequantize_row = [&](int64_t r) {
        q->GetRowBlocks(r, blocks.data());
        if (k.format == weights::BlockFormat::kQ8) {
          weights::DequantizeRowQ8(reinterpret_cast<const weights::BlockQ8*>(blocks.data()), cols,
                                   row.data());
        } else {
          weights::DequantizeRowQ4(reinterpret_cast<const weights::BlockQ4*>(blocks.data()), cols,
                                   row.data());
        }
      };
      double max_err = 0;
      for (int64_t r = 0; r < q->rows(); ++r) {
        dequantize_row(r);
        for (int64_t i = 0; i < cols; ++i) {
          max_err = std::max(max_err, std::fabs(double{row[i]} - want[r * cols + i]));
        }
      }
      // Close to the checkpoint (so the rows are where HF has them) ...
      EXPECT_LT(max_err, k.format == weights::BlockFormat::kQ8 ? 0.01 : 0.2) << k.type << name;
      // ... and exactly the file's values, row for row.
      const GgufTensor* t =
          file->FindTensor(std::string("blk.2.attn_") + std::string(proj).substr(0, 1) + ".weight");
      ASSERT_NE(t, nullptr);
      std::vector<float> file_row(cols);
      const int heads = std::string(proj) == "q_proj" ? c->num_heads : c->num_kv_heads;
      for (int64_t r = 0; r < q->rows(); ++r) {
        int64_t src = r;
        if (std::string(proj) != "v_proj") {
          const int64_t hd = q->rows() / heads, half = hd / 2;
          src = r / hd * hd + 2 * (r % hd % half) + r % hd / half;
        }
        DequantizeRow(*t, src, file_row.data());
        dequantize_row(r);
        ASSERT_EQ(row, file_row) << k.type << " " << name << " row " << r;
      }
    }
  }
}

// llama.cpp's Q8_0 and the runtime's q8 quantizer differ only in rounding:
// the same fp16 scale d = amax / 127 in every block, codes computed with the
// unrounded d (llama.cpp) or the fp16 one (ours), so no code differs by more
// than 1 (measured: 80% of the blocks identical, 0.7% of the codes off by
// one).
TEST(GgufModelTest, Q8_0BlocksAreOurQ8UpToCodeRounding) {
  auto hf = WeightFiles::Open(kModelDir);
  ASSERT_TRUE(hf.ok()) << hf.status();
  auto file = Open("Q8_0");
  auto c = ConfigFromGguf(*file);
  auto w = WeightsFromGguf(file, *c, weights::BlockFormat::kQ8);
  ASSERT_TRUE(w.ok()) << w.status();
  int64_t blocks = 0, identical = 0, codes_off = 0;
  for (const auto& [name, q] : (*w)->quantized()) {
    if (name.find("down_proj") != std::string::npos) continue;  // F16 in the file
    const std::vector<float> x = Floats(*(*hf)->Find(name));
    weights::QuantizedMatrix own(weights::BlockFormat::kQ8, q->rows(), q->cols());
    ASSERT_TRUE(own.QuantizeRows(x.data(), DType::kF32, 0, q->rows()).ok());
    std::vector<weights::BlockQ8> a(q->blocks_per_row()), b(q->blocks_per_row());
    for (int64_t r = 0; r < q->rows(); ++r) {
      q->GetRowBlocks(r, a.data());
      own.GetRowBlocks(r, b.data());
      for (size_t k = 0; k < a.size(); ++k) {
        ASSERT_EQ(a[k].d, b[k].d) << name << " row " << r << " block " << k;
        bool same = true;
        for (int i = 0; i < weights::kBlockSize; ++i) {
          ASSERT_LE(std::abs(a[k].qs[i] - b[k].qs[i]), 1) << name;
          same &= a[k].qs[i] == b[k].qs[i];
          codes_off += a[k].qs[i] != b[k].qs[i];
        }
        identical += same;
        ++blocks;
      }
    }
  }
  std::printf("Q8_0 vs own q8: %lld of %lld blocks identical, %lld codes off by one\n",
              static_cast<long long>(identical), static_cast<long long>(blocks),
              static_cast<long long>(codes_off));
  // Per layer: q, o 64 rows, k, v 32, gate, up 172, of 2 blocks each.
  EXPECT_EQ(blocks, 5 * 2 * (64 * 2 + 32 * 2 + 172 * 2));
  // Measured: 4288 of 5360 blocks identical, 1258 of 171520 codes off by one.
  EXPECT_GT(identical, blocks * 3 / 4);
  EXPECT_LT(codes_off, blocks * weights::kBlockSize / 100);
}

// Run in another format: every projection handed over dense (decoded), for
// the runtime to quantize its own way.
TEST(GgufModelTest, OtherFormatsAreDecoded) {
  auto file = Open("Q8_0");
  ASSERT_NE(file, nullptr);
  auto c = ConfigFromGguf(*file);
  auto dense = WeightsFromGguf(file, *c, std::nullopt);
  ASSERT_TRUE(dense.ok()) << dense.status();
  EXPECT_TRUE((*dense)->quantized().empty());
  const TensorInfo* q = (*dense)->Find("model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dtype, DType::kF32);
  // As q4: every projection requantized from the decoded Q8_0 values.
  auto as_q4 = WeightsFromGguf(file, *c, weights::BlockFormat::kQ4);
  ASSERT_TRUE(as_q4.ok());
  EXPECT_EQ((*as_q4)->quantized().size(), 35u);
  EXPECT_EQ((*as_q4)->Find("model.layers.0.self_attn.q_proj.weight"), nullptr);
  const weights::QuantizedMatrix* q4 =
      (*as_q4)->FindQuantized("model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(q4, nullptr);
  EXPECT_EQ(q4->format(), weights::BlockFormat::kQ4);
  std::vector<weights::BlockQ4> blocks(q4->blocks_per_row());
  std::vector<float> got(q4->cols());
  const std::vector<float> decoded = Floats(*q);  // the Q8_0 values, dense
  double err = 0, mag = 0;
  for (int64_t r = 0; r < q4->rows(); ++r) {
    q4->GetRowBlocks(r, blocks.data());
    weights::DequantizeRowQ4(blocks.data(), q4->cols(), got.data());
    for (int64_t i = 0; i < q4->cols(); ++i) {
      err += std::fabs(got[i] - decoded[r * q4->cols() + i]);
      mag += std::fabs(decoded[r * q4->cols() + i]);
    }
  }
  // 4 bits: the mean error is a small fraction of the mean magnitude (a
  // wrong row order would make it about 1.4).
  EXPECT_LT(err / mag, 0.15);
}

std::string Metadata(const std::vector<std::pair<std::string, uint32_t>>& ints,
                     const std::string& arch = "llama") {
  std::string b = "GGUF";
  auto put = [&b](auto v) { b.append(reinterpret_cast<const char*>(&v), sizeof v); };
  auto str = [&](const std::string& s) {
    put(uint64_t{s.size()});
    b += s;
  };
  put(uint32_t{3});
  put(uint64_t{0});
  put(uint64_t{ints.size() + 1});
  str("general.architecture");
  put(uint32_t{8});
  str(arch);
  for (const auto& [k, v] : ints) {
    str(k);
    put(uint32_t{4});
    put(v);
  }
  return b;
}

// A llama GGUF with hidden 64, 1 head of 64 (rope base 500000), vocab 16,
// and F32 tensors token_embd and rope_freqs.weight = `rope_freqs`.
std::string WithRopeFreqs(const std::vector<float>& rope_freqs) {
  std::string b = "GGUF";
  auto put = [&b](auto v) { b.append(reinterpret_cast<const char*>(&v), sizeof v); };
  auto str = [&](const std::string& s) {
    put(uint64_t{s.size()});
    b += s;
  };
  const std::vector<std::pair<std::string, uint32_t>> ints = {{"llama.block_count", 1},
                                                              {"llama.embedding_length", 64},
                                                              {"llama.feed_forward_length", 128},
                                                              {"llama.attention.head_count", 1},
                                                              {"llama.context_length", 1024}};
  put(uint32_t{3});
  put(uint64_t{2});
  put(uint64_t{ints.size() + 2});
  str("general.architecture");
  put(uint32_t{8});
  str("llama");
  for (const auto& [k, v] : ints) {
    str(k);
    put(uint32_t{4});
    put(v);
  }
  str("llama.rope.freq_base");
  put(uint32_t{6});
  put(500000.0f);
  str("token_embd.weight");
  put(uint32_t{2});
  put(int64_t{64});
  put(int64_t{16});
  put(uint32_t{0});
  put(uint64_t{0});
  str("rope_freqs.weight");
  put(uint32_t{1});
  put(int64_t(rope_freqs.size()));
  put(uint32_t{0});
  put(uint64_t{64 * 16 * 4});
  while (b.size() % 32 != 0) b += '\0';
  b += std::string(64 * 16 * 4, '\0');
  for (float x : rope_freqs) put(x);
  return b;
}

// Llama 3.x's rope_freqs.weight: the factors convert_hf_to_gguf.py writes
// for rope_scaling llama3 (factor 32, low 1, high 4, original 8192).
std::vector<float> Llama3Factors(double factor) {
  std::vector<float> out;
  for (int i = 0; i < 32; ++i) {
    const double freq = 1.0 / std::pow(500000.0, 2.0 * i / 64), wavelen = 2 * M_PI / freq;
    if (wavelen < 8192 / 4.0) {
      out.push_back(1.0f);
    } else if (wavelen > 8192 / 1.0) {
      out.push_back(static_cast<float>(factor));
    } else {
      const double smooth = (8192 / wavelen - 1) / (4 - 1);
      out.push_back(static_cast<float>(1 / ((1 - smooth) / factor + smooth)));
    }
  }
  return out;
}

TEST(GgufModelTest, Llama3RopeFactorsBecomeLlama3Scaling) {
  const std::vector<float> factors = Llama3Factors(32);
  int smooth = 0;
  for (float x : factors) smooth += x != 1.0f && x != 32.0f;
  ASSERT_GT(smooth, 0);  // the test covers the interpolated band
  auto file = GgufFile::FromBytes(WithRopeFreqs(factors), "l3.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  auto c = ConfigFromGguf(**file);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c->rope_scaling.factor, 32.0);
  EXPECT_EQ(c->rope_scaling.low_freq_factor, 1.0);
  EXPECT_EQ(c->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c->rope_theta, 500000.0);

  std::vector<float> other = factors;
  int band = 0;  // first factor of the interpolated band
  while (other[band] == 1.0f) ++band;
  other[band] *= 1.1f;
  auto bad = GgufFile::FromBytes(WithRopeFreqs(other), "l3.gguf");
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_THAT(ConfigFromGguf(**bad).status().message(),
              HasSubstr(absl::StrCat("rope_freqs.weight': factor ", band, " is ")));
  auto short_tensor = GgufFile::FromBytes(WithRopeFreqs({1, 2, 3}), "l3.gguf");
  ASSERT_TRUE(short_tensor.ok());
  EXPECT_THAT(ConfigFromGguf(**short_tensor).status().message(), HasSubstr("expected f32 [32]"));
}

TEST(GgufModelTest, ConfigErrorsNameTheKey) {
  auto check = [](const std::string& bytes, const std::string& message) {
    auto file = GgufFile::FromBytes(bytes, "m.gguf");
    ASSERT_TRUE(file.ok()) << file.status();
    auto c = ConfigFromGguf(**file);
    ASSERT_FALSE(c.ok()) << message;
    EXPECT_THAT(c.status().message(), HasSubstr(message));
    EXPECT_THAT(c.status().message(), HasSubstr("m.gguf"));
  };
  check(Metadata({}, "gemma"), "'gemma' is not supported");
  check(Metadata({}), "'llama.block_count' not found");
  check(Metadata({{"llama.block_count", 2},
                  {"llama.embedding_length", 64},
                  {"llama.feed_forward_length", 128},
                  {"llama.attention.head_count", 8},
                  {"llama.attention.head_count_kv", 3}}),
        "llama.attention.head_count_kv");
  check(Metadata({{"llama.block_count", 0}}), "0 is out of range");
  check(Metadata({{"llama.block_count", 2},
                  {"llama.embedding_length", 64},
                  {"llama.feed_forward_length", 128},
                  {"llama.attention.head_count", 8},
                  {"llama.rope.dimension_count", 4}}),
        "partial rotary");
}

}  // namespace
}  // namespace qkvshare::agents::gguf

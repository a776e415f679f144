#include "eval/weight_quality.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agents/safetensors.h"
#include "agents/sequence.h"
#include "agents/testing/random_llama.h"
#include "agents/weights/block_formats.h"
#include "base/status_macros.h"
#include "eval/metrics.h"
#include "quant/fp16.h"

namespace qkvshare::eval {
namespace {

namespace weights = agents::weights;
using quant::FloatToHalf;
using quant::HalfToFloat;
using weights::kBlockSize;

float RoundToHalf(float v) { return HalfToFloat(FloatToHalf(v)); }

// Applies `block_fn(x, n, out)` to each block of 32 (the last may be short).
template <typename Fn>
void ForEachBlock(absl::Span<const float> x, float* out, Fn block_fn) {
  const int64_t cols = static_cast<int64_t>(x.size());
  for (int64_t b = 0; b < cols; b += kBlockSize) {
    block_fn(x.data() + b, static_cast<int>(std::min(kBlockSize, cols - b)), out + b);
  }
}

// GGUF Q4_0 (llama.cpp quantize_row_q4_0_reference): d = max / -8 where max
// is the value of largest magnitude; value = d * (q - 8).
void Q4_0Block(const float* x, int n, float* out) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), max = x[i];
  }
  const float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f, dh = RoundToHalf(d);
  for (int i = 0; i < n; ++i) {
    const int q = std::min(15, static_cast<int>(x[i] * id + 8.5f));
    out[i] = dh * (q - 8);
  }
}

// Q4_0 layout with a least-squares scale search over candidate codes.
void Q4_0SearchBlock(const float* x, int n, float* out) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), max = x[i];
  }
  if (amax == 0.0f) {
    std::fill(out, out + n, 0.0f);
    return;
  }
  auto codes_for = [&](float iscale, int* l) {
    for (int i = 0; i < n; ++i) {
      l[i] = static_cast<int>(std::clamp(std::nearbyint(iscale * x[i]), -8.0f, 7.0f));
    }
  };
  int l[kBlockSize];
  double best_err = INFINITY;
  float best_d = max / -8.0f;
  for (int s = -9; s <= 9; ++s) {
    codes_for(-(8.0f + 0.1f * s) / max, l);
    double sxl = 0, sll = 0;
    for (int i = 0; i < n; ++i) sxl += double{x[i]} * l[i], sll += static_cast<double>(l[i]) * l[i];
    if (sll == 0) continue;
    const double d = sxl / sll;
    double err = 0;
    for (int i = 0; i < n; ++i) err += (d * l[i] - x[i]) * (d * l[i] - x[i]);
    if (err < best_err) best_err = err, best_d = static_cast<float>(d);
  }
  const float dh = RoundToHalf(best_d);
  codes_for(dh != 0.0f ? 1.0f / dh : 0.0f, l);
  for (int i = 0; i < n; ++i) out[i] = dh * l[i];
}

// GGUF Q4_1 (llama.cpp quantize_row_q4_1_reference): d = (max - min) / 15,
// m = min; value = d * q + m.
void Q4_1Block(const float* x, int n, float* out) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
  const float d = (hi - lo) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
  const float dh = RoundToHalf(d), mh = RoundToHalf(lo);
  for (int i = 0; i < n; ++i) {
    const int q = std::min(15, static_cast<int>((x[i] - lo) * id + 0.5f));
    out[i] = dh * q + mh;
  }
}

// Q4_K-like: super-blocks of up to 256 columns; each sub-block of 32 gets the
// production q4 search's scale s_j and minimum m_j (m_j clamped to <= 0 as
// Q4_K stores -m_j), both quantized to 6 bits under fp16 super-scales; the
// codes are re-assigned with the quantized parameters.
void Q4KRow(absl::Span<const float> x, float* out) {
  constexpr int64_t kSuper = 256;
  const int64_t cols = static_cast<int64_t>(x.size());
  for (int64_t s0 = 0; s0 < cols; s0 += kSuper) {
    const int64_t s1 = std::min(cols, s0 + kSuper);
    std::vector<float> scale, negmin;
    for (int64_t b = s0; b < s1; b += kBlockSize) {
      weights::BlockQ4 blk;
      weights::QuantizeRowQ4(x.subspan(b, std::min(kBlockSize, s1 - b)), &blk);
      scale.push_back(HalfToFloat(blk.d));
      negmin.push_back(std::max(0.0f, -HalfToFloat(blk.m)));
    }
    const float d = RoundToHalf(*std::max_element(scale.begin(), scale.end()) / 63.0f);
    const float dmin = RoundToHalf(*std::max_element(negmin.begin(), negmin.end()) / 63.0f);
    for (size_t j = 0; j < scale.size(); ++j) {
      const float sc = d > 0 ? std::clamp(std::nearbyint(scale[j] / d), 0.0f, 63.0f) : 0.0f;
      const float mn = dmin > 0 ? std::clamp(std::nearbyint(negmin[j] / dmin), 0.0f, 63.0f) : 0.0f;
      const float step = d * sc, lo = -dmin * mn;
      const int64_t b = s0 + static_cast<int64_t>(j) * kBlockSize;
      for (int64_t c = b; c < std::min(s1, b + kBlockSize); ++c) {
        const float q =
            step > 0 ? std::clamp(std::nearbyint((x[c] - lo) / step), 0.0f, 15.0f) : 0.0f;
        out[c] = step * q + lo;
      }
    }
  }
}

// Symmetric 6-bit, d = max / -32 (max: the value of largest magnitude, on
// code -32), no search; value = d * q, q in [-32, 31].
void Q6PlainBlock(const float* x, int n, float* out) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) amax = std::fabs(x[i]), max = x[i];
  }
  const float dh = RoundToHalf(max / -32.0f), id = dh != 0.0f ? 1.0f / dh : 0.0f;
  for (int i = 0; i < n; ++i) out[i] = dh * std::clamp(std::nearbyint(x[i] * id), -32.0f, 31.0f);
}

// 6 bits with a minimum (Q4_1-like at 6 bits; fp16 d and m, 7 bits per
// weight): value = d * q + m, q in [0, 63], (d, m) searched as the
// production q4 quantizer does (candidate codes around 63 / (max - min),
// least-squares refit, least squared error kept), codes re-assigned with the
// fp16-rounded (d, m).
void Q6MinBlock(const float* x, int n, float* out) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
  float best_d = (hi - lo) / 63.0f, best_m = lo;
  if (hi > lo) {
    double best_err = INFINITY;
    for (int s = -16; s <= 16; ++s) {
      const float iscale = (63.0f + 0.1f * s) / (hi - lo);
      double sl = 0, sl2 = 0, sx = 0, sxl = 0, sxx = 0;
      int l[kBlockSize];
      for (int i = 0; i < n; ++i) {
        l[i] = static_cast<int>(std::clamp(std::nearbyint(iscale * (x[i] - lo)), 0.0f, 63.0f));
        sl += l[i], sl2 += double{1.0} * l[i] * l[i], sx += x[i], sxl += double{x[i]} * l[i];
        sxx += double{x[i]} * x[i];
      }
      const double det = n * sl2 - sl * sl;
      if (det <= 0) continue;
      const double d = (n * sxl - sl * sx) / det, m = (sl2 * sx - sl * sxl) / det;
      if (!(d > 0)) continue;
      const double err = d * d * sl2 + 2 * d * m * sl + n * m * m - 2 * d * sxl - 2 * m * sx + sxx;
      if (err < best_err) {
        best_err = err;
        best_d = static_cast<float>(d);
        best_m = static_cast<float>(m);
      }
    }
  }
  const float dh = RoundToHalf(best_d), mh = RoundToHalf(best_m);
  const float id = dh > 0.0f ? 1.0f / dh : 0.0f;
  for (int i = 0; i < n; ++i) {
    out[i] = dh * std::clamp(std::nearbyint((x[i] - mh) * id), 0.0f, 63.0f) + mh;
  }
}

// Q6_K-like (llama.cpp's output/embedding type under its Q4 mixes):
// super-blocks of up to 256 columns, 16 sub-blocks of 16 with a symmetric
// 6-bit code each (value = d * sc_j * q, q in [-32, 31]); each sub-block's
// scale from the production q6 search, the scales quantized to int8 under
// an fp16 super-scale d = max |scale| / 127, the codes re-assigned with the
// quantized scales. 6.5625 bits per weight.
void Q6KRow(absl::Span<const float> x, float* out) {
  constexpr int64_t kSuper = 256, kSub = 16;
  const int64_t cols = static_cast<int64_t>(x.size());
  for (int64_t s0 = 0; s0 < cols; s0 += kSuper) {
    const int64_t s1 = std::min(cols, s0 + kSuper);
    std::vector<float> scale;
    for (int64_t b = s0; b < s1; b += kSub) {
      weights::BlockQ6 blk;
      weights::QuantizeRowQ6(x.subspan(b, std::min(kSub, s1 - b)), &blk);
      scale.push_back(HalfToFloat(blk.d));
    }
    float amax = 0;
    for (float v : scale) amax = std::max(amax, std::fabs(v));
    const float d = RoundToHalf(amax / 127.0f);
    for (size_t j = 0; j < scale.size(); ++j) {
      const float sc = d > 0 ? std::clamp(std::nearbyint(scale[j] / d), -127.0f, 127.0f) : 0.0f;
      const float step = d * sc;
      const int64_t b = s0 + static_cast<int64_t>(j) * kSub;
      for (int64_t c = b; c < std::min(s1, b + kSub); ++c) {
        const float q = step != 0 ? std::clamp(std::nearbyint(x[c] / step), -32.0f, 31.0f) : 0.0f;
        out[c] = step * q;
      }
    }
  }
}

template <typename Block, typename Quantize, typename Dequantize>
RowRoundTrip ProductionRoundTrip(Quantize quantize, Dequantize dequantize) {
  return [quantize, dequantize](absl::Span<const float> x, float* out) {
    std::vector<Block> blocks(weights::BlocksPerRow(static_cast<int64_t>(x.size())));
    quantize(x, blocks.data());
    dequantize(blocks.data(), static_cast<int64_t>(x.size()), out);
  };
}

template <void (*kBlockFn)(const float*, int, float*)>
RowRoundTrip BlockRoundTrip() {
  return [](absl::Span<const float> x, float* out) { ForEachBlock(x, out, kBlockFn); };
}

absl::StatusOr<std::vector<float>> ToFloats(const agents::TensorInfo& t) {
  if (!t.dtype.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(t.file, ": tensor '", t.name, "' has dtype ",
                                                   t.dtype_name, " (expected F32, F16 or BF16)"));
  }
  std::vector<float> v(t.numel());
  const auto* u16 = static_cast<const uint16_t*>(t.data);
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (*t.dtype) {
      case DType::kF32:
        v[i] = static_cast<const float*>(t.data)[i];
        break;
      case DType::kF16:
        v[i] = HalfToFloat(u16[i]);
        break;
      case DType::kBF16:
        v[i] = Bf16ToFloat(u16[i]);
        break;
    }
  }
  return v;
}

}  // namespace

std::vector<WeightScheme> AllWeightSchemes() {
  return {
      {"q8", 8.5, "GGUF Q8_0 blocks (production)",
       ProductionRoundTrip<weights::BlockQ8>(weights::QuantizeRowQ8, weights::DequantizeRowQ8)},
      {"q4", 5.0, "GGUF Q4_1 blocks, least-squares (d, m) search (production)",
       ProductionRoundTrip<weights::BlockQ4>(weights::QuantizeRowQ4, weights::DequantizeRowQ4)},
      {"q4_0", 4.5, "GGUF Q4_0 (llama.cpp reference quantizer)", BlockRoundTrip<Q4_0Block>()},
      {"q4_0_search", 4.5, "Q4_0 layout, least-squares scale search",
       BlockRoundTrip<Q4_0SearchBlock>()},
      {"q4_1", 5.0, "GGUF Q4_1 (llama.cpp reference quantizer)", BlockRoundTrip<Q4_1Block>()},
      {"q4_k", 4.5, "Q4_K-like: 256-col super-blocks, 6-bit sub-block scales and minima", Q4KRow},
      {"q6", 6.5,
       "6-bit symmetric blocks, least-squares scale search (production: q4's embeddings)",
       ProductionRoundTrip<weights::BlockQ6>(weights::QuantizeRowQ6, weights::DequantizeRowQ6)},
      {"q6_0", 6.5, "6-bit symmetric blocks, d = max / -32 (no search)",
       BlockRoundTrip<Q6PlainBlock>()},
      {"q6_1", 7.0, "6-bit blocks with a minimum, least-squares (d, m) search",
       BlockRoundTrip<Q6MinBlock>()},
      {"q6_k", 6.5625, "Q6_K-like: 256-col super-blocks, 16 sub-blocks of 16, int8 scales", Q6KRow},
  };
}

absl::StatusOr<WeightScheme> FindWeightScheme(const std::string& name) {
  std::vector<std::string> names;
  for (WeightScheme& s : AllWeightSchemes()) {
    if (s.name == name) return std::move(s);
    names.push_back(s.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown weight scheme '", name, "' (known: ", absl::StrJoin(names, ", "), ")"));
}

bool QuantizedByPolicy(const std::string& tensor_name, const WeightPolicy& policy) {
  if (!absl::EndsWith(tensor_name, ".weight")) return false;
  if (absl::StrContains(tensor_name, "embed_tokens") || absl::StrContains(tensor_name, "lm_head")) {
    return !policy.embeddings.empty();
  }
  return absl::StrContains(tensor_name, "_proj.");
}

absl::Status WriteRoundTrippedCheckpoint(const std::string& src_dir, const std::string& dst_dir,
                                         const WeightScheme& scheme, const WeightPolicy& policy) {
  namespace fs = std::filesystem;
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<agents::WeightFiles> files,
                       agents::WeightFiles::Open(src_dir));
  std::error_code ec;
  fs::create_directories(dst_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dst_dir, ": ", ec.message()));
  for (const char* name :
       {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"}) {
    const fs::path from = fs::path(src_dir) / name;
    if (!fs::exists(from)) continue;
    fs::copy_file(from, fs::path(dst_dir) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat(from.string(), ": ", ec.message()));
  }
  RowRoundTrip embedding_rt;
  if (!policy.embeddings.empty()) {
    QKV_ASSIGN_OR_RETURN(WeightScheme s, FindWeightScheme(policy.embeddings));
    embedding_rt = s.round_trip;
  }
  std::vector<agents::testing::TensorData> out;
  for (const auto& [name, info] : files->tensors()) {
    QKV_ASSIGN_OR_RETURN(std::vector<float> values, ToFloats(*info));
    if (info->shape.size() == 2 && QuantizedByPolicy(name, policy)) {
      const bool embedding =
          absl::StrContains(name, "embed_tokens") || absl::StrContains(name, "lm_head");
      const RowRoundTrip& rt = embedding ? embedding_rt : scheme.round_trip;
      const int64_t cols = info->shape[1];
      std::vector<float> row(cols);
      for (int64_t r = 0; r < info->shape[0]; ++r) {
        std::copy_n(values.data() + r * cols, cols, row.data());
        rt(row, values.data() + r * cols);
      }
    }
    out.push_back({name, "F32", info->shape, std::move(values)});
  }
  return agents::testing::WriteFile((fs::path(dst_dir) / "model.safetensors").string(),
                                    agents::testing::EncodeSafetensors(out));
}

std::string ForwardPathName(ForwardPath path) {
  switch (path) {
    case ForwardPath::kPrefill:
      return "prefill";
    case ForwardPath::kDecodeSteps:
      return "decode steps";
    case ForwardPath::kKernelChunks:
      return absl::StrCat("kernel chunks of ", kKernelChunkTokens);
  }
  return "?";
}

absl::StatusOr<WeightQuality> CompareTeacherForced(const agents::ModelHandle& reference,
                                                   const agents::ModelHandle& candidate,
                                                   absl::Span<const GoldenCase> cases,
                                                   ForwardPath path) {
  if (reference->config().vocab_size != candidate->config().vocab_size) {
    return absl::InvalidArgumentError("the two models have different vocabularies");
  }
  WeightQuality q;
  double kl_sum = 0;
  int64_t agree = 0;
  auto add = [&](absl::Span<const float> ref_row, absl::Span<const float> got_row) {
    const double kl = KlDivergence(ref_row, got_row);
    kl_sum += kl;
    q.max_kl = std::max(q.max_kl, kl);
    agree += ArgMax(ref_row) == ArgMax(got_row);
    ++q.positions;
  };
  agents::SequenceOptions cand_options;
  if (path == ForwardPath::kKernelChunks) cand_options.prefill_chunk_tokens = kKernelChunkTokens;
  for (const GoldenCase& c : cases) {
    const int64_t n = static_cast<int64_t>(c.ids.size());
    if (c.prompt_tokens < 1 || n <= c.prompt_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("golden case ", c.index, " has no continuation to teacher-force"));
    }
    const absl::Span<const int32_t> fed = absl::MakeConstSpan(c.ids).first(n - 1);
    QKV_ASSIGN_OR_RETURN(auto ref_seq, agents::Sequence::Create(reference));
    QKV_ASSIGN_OR_RETURN(auto cand_seq, agents::Sequence::Create(candidate, cand_options));
    QKV_ASSIGN_OR_RETURN(agents::LogitsView ref, ref_seq->Append(fed, agents::LogitsMode::kAll));
    // Row r predicts ids[r + 1]: the continuation starts at r = prompt - 1.
    if (path == ForwardPath::kDecodeSteps) {
      for (int64_t r = 0; r < n - 1; ++r) {
        QKV_ASSIGN_OR_RETURN(absl::Span<const float> got, cand_seq->Decode(fed[r]));
        if (r >= c.prompt_tokens - 1) add(ref.row(r), got);
      }
    } else {
      QKV_ASSIGN_OR_RETURN(agents::LogitsView got, cand_seq->Append(fed, agents::LogitsMode::kAll));
      for (int64_t r = c.prompt_tokens - 1; r < n - 1; ++r) add(ref.row(r), got.row(r));
    }
  }
  q.mean_kl = kl_sum / q.positions;
  q.top1 = static_cast<double>(agree) / q.positions;
  return q;
}

}  // namespace qkvshare::eval

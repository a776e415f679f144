#include "agents/gguf/gguf_model.h"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agents/gguf/gguf_dequant.h"
#include "agents/weights/block_formats.h"
#include "base/status_macros.h"
#include "quant/fp16.h"

namespace qkvshare::agents::gguf {
namespace {

absl::Status KeyError(const GgufFile& f, const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(f.path(), ": metadata '", key, "': ", what));
}

// An integer key in [min, max]; `fallback` when absent (nullopt: required).
absl::StatusOr<int64_t> IntKey(const GgufFile& f, const std::string& key,
                               std::optional<int64_t> fallback, int64_t min,
                               int64_t max = std::numeric_limits<int32_t>::max()) {
  const Value* v = f.Find(key);
  if (v == nullptr) {
    if (fallback.has_value()) return *fallback;
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": metadata key '", key, "' not found"));
  }
  if (v->type == ValueType::kArray) {
    return KeyError(f, key, "per-layer values (an array) are not supported");
  }
  absl::StatusOr<int64_t> i = f.GetInt(key);
  if (!i.ok()) return KeyError(f, key, "not an integer");
  if (*i < min || *i > max) {
    return KeyError(f, key, absl::StrCat(*i, " is out of range [", min, ", ", max, "]"));
  }
  return *i;
}

absl::StatusOr<double> FloatKey(const GgufFile& f, const std::string& key, double fallback) {
  if (f.Find(key) == nullptr) return fallback;
  absl::StatusOr<double> v = f.GetFloat(key);
  if (!v.ok()) return KeyError(f, key, "not a number");
  if (!std::isfinite(*v) || *v <= 0) return KeyError(f, key, absl::StrCat(*v, " is not > 0"));
  return *v;
}

bool IsProjection(const std::string& gguf_name) {
  for (const char* p : {".attn_q.weight", ".attn_k.weight", ".attn_v.weight", ".attn_output.weight",
                        ".ffn_gate.weight", ".ffn_up.weight", ".ffn_down.weight"}) {
    if (absl::EndsWith(gguf_name, p)) return true;
  }
  return false;
}

// How a ggml type maps to the runtime's projection formats (see
// NativeLayerFormat): 0 dense, 1 q8-like, 2 q4-like.
int Family(GgmlType t) {
  switch (t) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kF64:
      return 0;
    case GgmlType::kQ8_0:
    case GgmlType::kQ8_1:
    case GgmlType::kQ8_K:
    case GgmlType::kQ6_K:
    case GgmlType::kQ5_0:
    case GgmlType::kQ5_1:
    case GgmlType::kQ5_K:
      return 1;
    default:
      return 2;
  }
}

// Anonymous memory for decoded / permuted tensors (the runtime drops the
// pages it has copied from with MADV_DONTNEED, which must not hit the heap).
class Buffer {
 public:
  static std::unique_ptr<Buffer> Create(size_t bytes) {
    if (bytes == 0) bytes = 1;
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    return std::unique_ptr<Buffer>(new Buffer(p, bytes));
  }
  ~Buffer() { munmap(data_, size_); }
  uint8_t* data() { return static_cast<uint8_t*>(data_); }

 private:
  Buffer(void* data, size_t size) : data_(data), size_(size) {}
  void* data_;
  size_t size_;
};

struct Storage {
  std::shared_ptr<const GgufFile> file;
  std::vector<std::unique_ptr<Buffer>> buffers;
};

// One tensor of the llama graph: its GGUF and HF names, the HF shape, and
// the rotary permutation to undo (heads > 0).
struct Mapping {
  std::string gguf;
  std::string hf;
  std::vector<int64_t> shape;
  int heads = 0;
  bool optional = false;
};

std::vector<Mapping> LlamaTensors(const ModelConfig& c) {
  const int64_t D = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t QD = int64_t{c.num_heads} * c.head_dim, KVD = int64_t{c.num_kv_heads} * c.head_dim;
  // convert_hf_to_gguf.py permutes q/k rows for llama only (LlamaModel).
  const bool permuted = c.arch == ModelArch::kLlama;
  const int qh = permuted ? c.num_heads : 0, kvh = permuted ? c.num_kv_heads : 0;
  std::vector<Mapping> m;
  m.push_back({"token_embd.weight", "model.embed_tokens.weight", {V, D}});
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string b = absl::StrCat("blk.", l, ".");
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const std::string a = p + "self_attn.", f = p + "mlp.";
    m.push_back({b + "attn_norm.weight", p + "input_layernorm.weight", {D}});
    m.push_back({b + "attn_q.weight", a + "q_proj.weight", {QD, D}, qh});
    m.push_back({b + "attn_k.weight", a + "k_proj.weight", {KVD, D}, kvh});
    m.push_back({b + "attn_v.weight", a + "v_proj.weight", {KVD, D}});
    m.push_back({b + "attn_output.weight", a + "o_proj.weight", {D, QD}});
    m.push_back({b + "attn_q.bias", a + "q_proj.bias", {QD}, qh, !c.qkv_bias});
    m.push_back({b + "attn_k.bias", a + "k_proj.bias", {KVD}, kvh, !c.qkv_bias});
    m.push_back({b + "attn_v.bias", a + "v_proj.bias", {KVD}, 0, !c.qkv_bias});
    m.push_back({b + "attn_output.bias", a + "o_proj.bias", {D}, 0, !c.o_bias});
    m.push_back({b + "ffn_norm.weight", p + "post_attention_layernorm.weight", {D}});
    m.push_back({b + "ffn_gate.weight", f + "gate_proj.weight", {I, D}});
    m.push_back({b + "ffn_up.weight", f + "up_proj.weight", {I, D}});
    m.push_back({b + "ffn_down.weight", f + "down_proj.weight", {D, I}});
    m.push_back({b + "ffn_gate.bias", f + "gate_proj.bias", {I}, 0, !c.mlp_bias});
    m.push_back({b + "ffn_up.bias", f + "up_proj.bias", {I}, 0, !c.mlp_bias});
    m.push_back({b + "ffn_down.bias", f + "down_proj.bias", {D}, 0, !c.mlp_bias});
  }
  m.push_back({"output_norm.weight", "model.norm.weight", {D}});
  m.push_back({"output.weight", "lm_head.weight", {V, D}, 0, c.tie_word_embeddings});
  return m;
}

// GGUF row of HF row r, for a tensor permuted over `heads` heads of
// rows / heads rows each: HF row h*hd + s*hd/2 + j is GGUF row h*hd + 2j + s.
int64_t SourceRow(int64_t r, int64_t rows, int heads) {
  if (heads <= 0) return r;
  const int64_t hd = rows / heads, half = hd / 2;
  const int64_t h = r / hd, within = r % hd;
  const int64_t s = within / half, j = within % half;
  return h * hd + 2 * j + s;
}

std::optional<DType> DenseDType(GgmlType t) {
  switch (t) {
    case GgmlType::kF32:
      return DType::kF32;
    case GgmlType::kF16:
      return DType::kF16;
    case GgmlType::kBF16:
      return DType::kBF16;
    default:
      return std::nullopt;
  }
}

// True when `t`'s blocks can be used as `format` without requantizing.
bool UsableAsIs(const GgufTensor& t, weights::BlockFormat format) {
  if (format == weights::BlockFormat::kQ8) return t.type == GgmlType::kQ8_0;
  if (format != weights::BlockFormat::kQ4) return false;
  if (t.type == GgmlType::kQ4_1) return true;
  if (t.type != GgmlType::kQ4_0) return false;
  // -8 d must be finite in fp16.
  for (size_t off = 0; off + 18 <= t.nbytes; off += 18) {
    uint16_t d;
    std::memcpy(&d, t.data + off, 2);
    if (!std::isfinite(quant::HalfToFloat(d) * 8.0f) ||
        std::fabs(quant::HalfToFloat(d) * 8.0f) > quant::kFp16Max) {
      return false;
    }
  }
  return true;
}

absl::StatusOr<std::unique_ptr<weights::QuantizedMatrix>> Blocks(const GgufTensor& t,
                                                                 const Mapping& m,
                                                                 weights::BlockFormat format) {
  const int64_t rows = m.shape[0], cols = m.shape[1];
  auto q = std::make_unique<weights::QuantizedMatrix>(format, rows, cols);
  const int64_t blocks = weights::BlocksPerRow(cols);
  const size_t row_bytes = t.nbytes / rows;
  // Every block's fp16 scale (and Q4_1's minimum) must be finite: the
  // kernels would turn a NaN or inf into whole rows of NaN logits.
  const size_t block_bytes = row_bytes / blocks;
  const int halves = t.type == GgmlType::kQ4_1 ? 2 : 1;
  for (size_t off = 0; off + block_bytes <= t.nbytes; off += block_bytes) {
    for (int h = 0; h < halves; ++h) {
      uint16_t bits;
      std::memcpy(&bits, t.data + off + 2 * h, 2);
      if (!std::isfinite(quant::HalfToFloat(bits))) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", t.name, "': block ", off / block_bytes, " has a ",
                         h == 0 ? "scale" : "minimum", " that is not finite"));
      }
    }
  }
  std::vector<weights::BlockQ4> converted(t.type == GgmlType::kQ4_0 ? blocks : 0);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* src = t.data + SourceRow(r, rows, m.heads) * row_bytes;
    if (t.type != GgmlType::kQ4_0) {
      q->SetRowBlocks(r, src);
      continue;
    }
    // Q4_0 (d, codes q: value d (q - 8)) is q4 (d, m, codes: value d q + m)
    // with m = -8 d; same nibble order.
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* s = src + b * 18;
      weights::BlockQ4& o = converted[b];
      std::memcpy(&o.d, s, 2);
      o.m = quant::FloatToHalf(-8.0f * quant::HalfToFloat(o.d));
      std::memcpy(o.qs, s + 2, 16);
    }
    q->SetRowBlocks(r, converted.data());
  }
  return q;
}

// Runs work(begin, end) over [0, rows) split across the cores, at multiples
// of 64 rows (as the engine's parallel QuantizeRows: whatever row grouping a
// block storage uses, no two threads share one).
void ParallelRows(int64_t rows, const std::function<void(int64_t, int64_t)>& work) {
  const int64_t threads =
      std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()), rows / 64);
  if (threads <= 1) {
    work(0, rows);
    return;
  }
  std::vector<std::thread> pool;
  auto split = [&](int64_t i) { return i == threads ? rows : rows * i / threads / 64 * 64; };
  for (int64_t i = 0; i < threads; ++i) pool.emplace_back(work, split(i), split(i + 1));
  for (std::thread& th : pool) th.join();
}

// Decodes `t` row by row (rows un-permuted) and quantizes each row with the
// runtime's quantizer into `format` (the result QuantizedMatrix::QuantizeRows
// gives from a dense copy, without making one). Rows are split over the
// cores.
absl::StatusOr<std::unique_ptr<weights::QuantizedMatrix>> Requantize(const GgufTensor& t,
                                                                     const Mapping& m,
                                                                     weights::BlockFormat format) {
  const int64_t rows = m.shape[0], cols = m.shape[1];
  auto q = std::make_unique<weights::QuantizedMatrix>(format, rows, cols);
  std::mutex error_mu;
  absl::Status error;  // the first row that cannot be quantized
  auto work = [&](int64_t begin, int64_t end) {
    std::vector<float> row(cols);
    std::vector<uint8_t> blocks(weights::BlockBytes(format) * weights::BlocksPerRow(cols));
    for (int64_t r = begin; r < end; ++r) {
      DequantizeRow(t, SourceRow(r, rows, m.heads), row.data());
      if (absl::Status ok = weights::CheckQuantizableRow(row); !ok.ok()) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (error.ok()) {
          error = absl::InvalidArgumentError(absl::StrCat(
              "tensor '", t.name, "' cannot be requantized: row ", r, ", ", ok.message()));
        }
        return;
      }
      switch (format) {
        case weights::BlockFormat::kQ8:
          weights::QuantizeRowQ8(row, reinterpret_cast<weights::BlockQ8*>(blocks.data()));
          break;
        case weights::BlockFormat::kQ4:
          weights::QuantizeRowQ4(row, reinterpret_cast<weights::BlockQ4*>(blocks.data()));
          break;
        case weights::BlockFormat::kQ6:
          weights::QuantizeRowQ6(row, reinterpret_cast<weights::BlockQ6*>(blocks.data()));
          break;
      }
      q->SetRowBlocks(r, blocks.data());
    }
  };
  ParallelRows(rows, work);
  if (!error.ok()) return error;
  return q;
}

// Drops this process's pages of a tensor's file mapping once its blocks are
// copied (whole pages inside it only; they stay in the page cache, and a
// later read faults them in again), so the resident size does not count the
// weights twice.
void ReleaseFilePages(const GgufTensor& t) {
  const uintptr_t page = 4096, begin = reinterpret_cast<uintptr_t>(t.data);
  const uintptr_t first = (begin + page - 1) / page * page;
  const uintptr_t last = (begin + t.nbytes) / page * page;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

absl::Status UnsupportedType(const GgufFile& f, const GgufTensor& t) {
  return absl::InvalidArgumentError(absl::StrCat(
      f.path(), ": tensor '", t.name, "' has type ", GgmlTypeName(t.type),
      ", which this runtime does not load (supported: ", DequantizableTypeNames(), ")"));
}

// rope_freqs.weight (Llama 3.1+): the factor each RoPE frequency is divided
// by, written by convert_hf_to_gguf.py from HF's rope_scaling "llama3" with
// low_freq_factor 1, high_freq_factor 4 and an original context of 8192 (the
// values of every Llama 3.x release; the converter does not store them).
// Accepted when the factors are exactly those of some `factor` (their
// maximum): the config then says rope_scaling llama3, which the runtime
// computes the HF way. Other factors are InvalidArgument.
absl::Status Llama3RopeFromFactors(const GgufFile& f, const GgufTensor& t, ModelConfig* c) {
  const int64_t half = c->head_dim / 2;
  if (t.type != GgmlType::kF32 || t.dims.size() != 1 || t.dims[0] != half) {
    return absl::InvalidArgumentError(absl::StrCat(f.path(), ": tensor 'rope_freqs.weight' is ",
                                                   GgmlTypeName(t.type), " ", t.DimsString(),
                                                   ", expected f32 [", half, "]"));
  }
  std::vector<float> got(half);
  std::memcpy(got.data(), t.data, half * sizeof(float));
  RopeScaling s;
  s.type = RopeScaling::Type::kLlama3;
  s.factor = *std::max_element(got.begin(), got.end());
  s.low_freq_factor = 1.0;
  s.high_freq_factor = 4.0;
  s.original_max_position_embeddings = 8192;
  const double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
  const double high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
  for (int64_t i = 0; i < half; ++i) {
    const double freq = 1.0 / std::pow(c->rope_theta, static_cast<double>(2 * i) /
                                                          static_cast<double>(c->head_dim));
    const double wavelen = 2 * M_PI / freq;
    double want = 1.0;
    if (wavelen > low_wavelen) {
      want = s.factor;
    } else if (wavelen >= high_wavelen) {
      const double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                            (s.high_freq_factor - s.low_freq_factor);
      want = 1.0 / ((1 - smooth) / s.factor + smooth);
    }
    if (!(std::fabs(got[i] - want) <= 1e-3 * want)) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.path(), ": tensor 'rope_freqs.weight': factor ", i, " is ", got[i],
                       ", Llama 3 RoPE "
                       "scaling (factor ",
                       s.factor, ", low 1, high 4, original context 8192) gives ", want,
                       "; other per-frequency factors are not supported"));
    }
  }
  c->rope_scaling = s;
  return absl::OkStatus();
}

}  // namespace

std::optional<weights::BlockFormat> NativeLayerFormat(const GgufFile& file) {
  int64_t count[3] = {0, 0, 0};
  for (const GgufTensor& t : file.tensors()) {
    if (IsProjection(t.name)) count[Family(t.type)] += t.numel;
  }
  if (count[0] >= count[1] && count[0] >= count[2]) return std::nullopt;
  return count[1] >= count[2] ? weights::BlockFormat::kQ8 : weights::BlockFormat::kQ4;
}

absl::StatusOr<ModelConfig> ConfigFromGguf(const GgufFile& f) {
  QKV_ASSIGN_OR_RETURN(std::string arch, f.GetString("general.architecture"));
  if (arch != "llama" && arch != "qwen2") {
    return KeyError(f, "general.architecture",
                    absl::StrCat("'", arch, "' is not supported (supported: llama, qwen2)"));
  }
  const std::string p = arch + ".";
  ModelConfig c;
  c.arch = arch == "qwen2" ? ModelArch::kQwen2 : ModelArch::kLlama;
  QKV_ASSIGN_OR_RETURN(int64_t layers, IntKey(f, p + "block_count", std::nullopt, 1, 1 << 16));
  QKV_ASSIGN_OR_RETURN(int64_t hidden, IntKey(f, p + "embedding_length", std::nullopt, 1));
  QKV_ASSIGN_OR_RETURN(int64_t ffn, IntKey(f, p + "feed_forward_length", std::nullopt, 1));
  QKV_ASSIGN_OR_RETURN(int64_t heads,
                       IntKey(f, p + "attention.head_count", std::nullopt, 1, 1 << 16));
  QKV_ASSIGN_OR_RETURN(int64_t kv_heads, IntKey(f, p + "attention.head_count_kv", heads, 1, heads));
  if (heads % kv_heads != 0) {
    return KeyError(f, p + "attention.head_count_kv",
                    absl::StrCat(kv_heads, " does not divide head_count ", heads));
  }
  if (f.Find(p + "attention.key_length") == nullptr && hidden % heads != 0) {
    return KeyError(f, p + "attention.head_count",
                    absl::StrCat(heads, " does not divide embedding_length ", hidden));
  }
  QKV_ASSIGN_OR_RETURN(int64_t head_dim,
                       IntKey(f, p + "attention.key_length", hidden / heads, 2, 1 << 16));
  QKV_ASSIGN_OR_RETURN(int64_t value_dim,
                       IntKey(f, p + "attention.value_length", head_dim, 1, 1 << 16));
  if (value_dim != head_dim) {
    return KeyError(f, p + "attention.value_length",
                    absl::StrCat(value_dim, " differs from key_length ", head_dim));
  }
  if (head_dim % 2 != 0) {
    return KeyError(f, p + "attention.key_length",
                    absl::StrCat(head_dim, " is odd (RoPE needs pairs)"));
  }
  QKV_ASSIGN_OR_RETURN(int64_t rope_dims,
                       IntKey(f, p + "rope.dimension_count", head_dim, 1, 1 << 16));
  if (rope_dims != head_dim) {
    return KeyError(f, p + "rope.dimension_count",
                    absl::StrCat(rope_dims, " differs from the head size ", head_dim,
                                 " (partial rotary is not supported)"));
  }
  c.num_layers = static_cast<int>(layers);
  c.hidden_size = static_cast<int>(hidden);
  c.intermediate_size = static_cast<int>(ffn);
  c.num_heads = static_cast<int>(heads);
  c.num_kv_heads = static_cast<int>(kv_heads);
  c.head_dim = static_cast<int>(head_dim);
  QKV_ASSIGN_OR_RETURN(c.rope_theta, FloatKey(f, p + "rope.freq_base", 10000.0));
  QKV_ASSIGN_OR_RETURN(c.rms_norm_eps, FloatKey(f, p + "attention.layer_norm_rms_epsilon", 1e-5));
  QKV_ASSIGN_OR_RETURN(c.max_position_embeddings,
                       IntKey(f, p + "context_length", std::nullopt, 1, int64_t{1} << 24));
  const GgufTensor* embed = f.FindTensor("token_embd.weight");
  if (embed == nullptr || embed->dims.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": tensor 'token_embd.weight' not found or not 2-D"));
  }
  QKV_ASSIGN_OR_RETURN(int64_t vocab, IntKey(f, p + "vocab_size", embed->dims[1], 1));
  c.vocab_size = static_cast<int>(vocab);
  if (const Value* type = f.Find(p + "rope.scaling.type"); type != nullptr) {
    QKV_ASSIGN_OR_RETURN(std::string t, f.GetString(p + "rope.scaling.type"));
    if (t == "linear") {
      c.rope_scaling.type = RopeScaling::Type::kLinear;
      QKV_ASSIGN_OR_RETURN(c.rope_scaling.factor, FloatKey(f, p + "rope.scaling.factor", 1.0));
    } else if (t != "none") {
      return KeyError(f, p + "rope.scaling.type",
                      absl::StrCat("'", t, "' is not supported (none, linear)"));
    }
  }
  if (const GgufTensor* freqs = f.FindTensor("rope_freqs.weight"); freqs != nullptr) {
    QKV_RETURN_IF_ERROR(Llama3RopeFromFactors(f, *freqs, &c));
  }
  c.tie_word_embeddings = f.FindTensor("output.weight") == nullptr;
  c.qkv_bias = f.FindTensor("blk.0.attn_q.bias") != nullptr;
  if (c.arch == ModelArch::kQwen2 && !c.qkv_bias) {
    return absl::InvalidArgumentError(
        absl::StrCat(f.path(), ": qwen2 model without tensor 'blk.0.attn_q.bias'"));
  }
  c.o_bias = f.FindTensor("blk.0.attn_output.bias") != nullptr;
  c.mlp_bias = f.FindTensor("blk.0.ffn_gate.bias") != nullptr;
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"}) {
    if (f.Find(key) == nullptr) continue;
    QKV_ASSIGN_OR_RETURN(int64_t id, IntKey(f, key, std::nullopt, 0, vocab - 1));
    if (c.eos_token_ids.empty() || c.eos_token_ids[0] != id) {
      c.eos_token_ids.push_back(static_cast<int32_t>(id));
    }
  }
  if (f.Find("tokenizer.ggml.bos_token_id") != nullptr) {
    QKV_ASSIGN_OR_RETURN(int64_t id,
                         IntKey(f, "tokenizer.ggml.bos_token_id", std::nullopt, 0, vocab - 1));
    c.bos_token_id = static_cast<int32_t>(id);
  }
  c.generation.eos_token_ids = c.eos_token_ids;
  return c;
}

absl::StatusOr<std::unique_ptr<WeightFiles>> WeightsFromGguf(
    std::shared_ptr<const GgufFile> file, const ModelConfig& config,
    std::optional<weights::BlockFormat> layer_format) {
  const GgufFile& f = *file;
  auto storage = std::make_shared<Storage>();
  storage->file = file;
  const std::vector<Mapping> mappings = LlamaTensors(config);
  std::map<std::string, bool, std::less<>> known;
  for (const Mapping& m : mappings) known[m.gguf] = true;
  known["rope_freqs.weight"] = true;  // read by ConfigFromGguf
  for (const GgufTensor& t : f.tensors()) {
    if (known.count(t.name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.path(), ": tensor '", t.name,
                       "' is not part of the llama model (architecture "
                       "variant not supported)"));
    }
  }
  std::vector<TensorInfo> dense;
  std::map<std::string, std::unique_ptr<weights::QuantizedMatrix>, std::less<>> quantized;
  for (const Mapping& m : mappings) {
    const GgufTensor* t = f.FindTensor(m.gguf);
    if (t == nullptr) {
      if (m.optional) continue;
      return absl::InvalidArgumentError(
          absl::StrCat(f.path(), ": tensor '", m.gguf, "' not found"));
    }
    // GGUF dims are the HF shape reversed.
    std::vector<int64_t> want(m.shape.rbegin(), m.shape.rend());
    if (t->dims != want) {
      return absl::InvalidArgumentError(absl::StrCat(f.path(), ": tensor '", m.gguf, "' has dims ",
                                                     t->DimsString(), ", expected [",
                                                     absl::StrJoin(want, ", "), "]"));
    }
    const int64_t rows = m.shape[0];
    const int64_t cols = m.shape.size() == 2 ? m.shape[1] : 1;
    if (m.heads > 0 && (rows % m.heads != 0 || (rows / m.heads) % 2 != 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.path(), ": tensor '", m.gguf, "': rows do not split into heads"));
    }
    const bool is_projection = m.shape.size() == 2 && IsProjection(m.gguf);
    if (is_projection && layer_format.has_value()) {
      if (UsableAsIs(*t, *layer_format)) {
        absl::StatusOr<std::unique_ptr<weights::QuantizedMatrix>> as_is =
            Blocks(*t, m, *layer_format);
        if (!as_is.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(f.path(), ": ", as_is.status().message()));
        }
        quantized[m.hf] = *std::move(as_is);
      } else {
        if (!CanDequantize(t->type)) return UnsupportedType(f, *t);
        // Requantized here, row by row (no f32 copy of the tensor).
        absl::StatusOr<std::unique_ptr<weights::QuantizedMatrix>> requantized =
            Requantize(*t, m, *layer_format);
        if (!requantized.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat(f.path(), ": ", requantized.status().message()));
        }
        quantized[m.hf] = *std::move(requantized);
      }
      if (f.mapped()) ReleaseFilePages(*t);
      continue;
    }
    TensorInfo info;
    info.name = m.hf;
    info.shape = m.shape;
    info.file = f.path();
    const std::optional<DType> dtype = DenseDType(t->type);
    if (dtype.has_value() && m.heads == 0) {  // in place
      info.dtype = dtype;
      info.dtype_name = *dtype == DType::kF32 ? "F32" : (*dtype == DType::kF16 ? "F16" : "BF16");
      info.data = t->data;
      info.nbytes = t->nbytes;
      dense.push_back(std::move(info));
      continue;
    }
    if (!CanDequantize(t->type)) return UnsupportedType(f, *t);
    // Permuted (in the stored dtype) or decoded (to f32) into new memory.
    const size_t elem = dtype.has_value() ? (*dtype == DType::kF32 ? 4 : 2) : 4;
    const size_t row_bytes = static_cast<size_t>(cols) * elem;
    auto buffer = Buffer::Create(row_bytes * rows);
    if (buffer == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat(f.path(), ": cannot map ", row_bytes * rows,
                                                       " bytes for tensor '", m.gguf, "'"));
    }
    if (m.shape.size() == 1) {
      // One GGUF row; a permuted bias moves elements.
      std::vector<uint8_t> row(row_bytes * rows);
      if (dtype.has_value()) {
        std::memcpy(row.data(), t->data, row.size());
      } else {
        DequantizeRow(*t, 0, reinterpret_cast<float*>(row.data()));
      }
      for (int64_t r = 0; r < rows; ++r) {
        std::memcpy(buffer->data() + r * elem, row.data() + SourceRow(r, rows, m.heads) * elem,
                    elem);
      }
    } else {
      const size_t src_row_bytes = t->nbytes / rows;
      uint8_t* out = buffer->data();
      ParallelRows(rows, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const int64_t src = SourceRow(r, rows, m.heads);
          uint8_t* dst = out + r * row_bytes;
          if (dtype.has_value()) {
            std::memcpy(dst, t->data + src * src_row_bytes, row_bytes);
          } else {
            DequantizeRow(*t, src, reinterpret_cast<float*>(dst));
          }
        }
      });
    }
    info.dtype = dtype.value_or(DType::kF32);
    info.dtype_name =
        *info.dtype == DType::kF32 ? "F32" : (*info.dtype == DType::kF16 ? "F16" : "BF16");
    if (f.mapped()) ReleaseFilePages(*t);
    info.data = buffer->data();
    info.nbytes = row_bytes * rows;
    storage->buffers.push_back(std::move(buffer));
    dense.push_back(std::move(info));
  }
  return WeightFiles::FromTensors(f.path(), std::move(dense), std::move(quantized),
                                  std::move(storage));
}

}  // namespace qkvshare::agents::gguf

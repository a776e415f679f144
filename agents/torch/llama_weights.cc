// LlamaEngine: weight loading (torch::from_blob over the safetensors
// mapping, or a one-time conversion), RoPE tables, thread settings.
#include <c10/util/Exception.h>
#include <dlfcn.h>
#include <malloc.h>
#include <sys/mman.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agents/torch/llama_engine.h"
#include "agents/torch/llama_impl.h"
#include "base/status_macros.h"

namespace qkvshare::agents::internal {
namespace {

// Anonymous memory for weight copies, backed by transparent huge pages where
// the kernel allows (MADV_HUGEPAGE): streaming weights through 4 KiB pages
// costs a TLB miss every 4 KiB, which on this VM (nested paging) measured
// 1.5x slower for the decode matrix-vector products than 2 MiB pages.
class HugePageArena : public WeightArena {
 public:
  static constexpr size_t kHugePage = size_t{2} << 20;

  static std::unique_ptr<HugePageArena> Create(size_t bytes) {
    const size_t size = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    // Over-map by one huge page to align the start.
    void* raw =
        mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return nullptr;
    const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
    if (aligned > start) munmap(raw, aligned - start);
    const uintptr_t end = aligned + size;
    const uintptr_t raw_end = start + size + kHugePage;
    if (raw_end > end) munmap(reinterpret_cast<void*>(end), raw_end - end);
    madvise(reinterpret_cast<void*>(aligned), size, MADV_HUGEPAGE);  // best effort
    return std::unique_ptr<HugePageArena>(
        new HugePageArena(reinterpret_cast<char*>(aligned), size));
  }
  ~HugePageArena() override { munmap(base_, size_); }

  // Next 64-byte aligned block of `bytes`.
  void* Take(size_t bytes) {
    void* p = base_ + used_;
    used_ += (bytes + 63) / 64 * 64;
    return p;
  }

 private:
  HugePageArena(char* base, size_t size) : base_(base), size_(size) {}
  char* base_;
  size_t size_;
  size_t used_ = 0;
};

// True when madvise(MADV_HUGEPAGE) can give this process transparent huge
// pages: /sys/kernel/mm/transparent_hugepage/enabled selects `always` or
// `madvise` (the file marks the active mode as "[mode]").
bool TransparentHugePagesAvailable() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string modes;
  if (!std::getline(in, modes)) return false;
  return modes.find("[always]") != std::string::npos ||
         modes.find("[madvise]") != std::string::npos;
}

// Drops this process's pages of a tensor's file mapping once it has been
// copied or quantized (whole pages inside it only; they stay in the page
// cache), so the resident size does not count the weights twice.
void ReleaseSourcePages(const TensorInfo& info) {
  const uintptr_t page = 4096, begin = reinterpret_cast<uintptr_t>(info.data);
  const uintptr_t first = (begin + page - 1) / page * page;
  const uintptr_t last = (begin + info.nbytes) / page * page;
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

// Collects the tensors of a model, validates them all, then creates them:
// views of the mapping when the stored dtype is the target dtype (and
// copies are not forced), else copies in one HugePageArena.
class WeightLoader {
 public:
  WeightLoader(const WeightFiles& files, LlamaEngine::Impl& impl, bool copy_all)
      : files_(files), impl_(impl), copy_all_(copy_all) {}

  // Requests `name` of `shape` as `target` into *dest (skipped unless
  // `present`).
  void Add(const std::string& name, std::vector<int64_t> shape, torch::ScalarType target,
           torch::Tensor* dest, bool present = true) {
    if (present) requests_.push_back({name, std::move(shape), target, dest, nullptr});
  }

  absl::Status Load() {
    size_t copy_bytes = 0;
    for (Request& r : requests_) {
      QKV_ASSIGN_OR_RETURN(r.info, files_.Get(r.name, r.shape));
      if (NeedsCopy(r)) {
        copy_bytes += (r.info->numel() * torch::elementSize(r.target) + 63) / 64 * 64;
      }
    }
    HugePageArena* arena = nullptr;
    if (copy_bytes > 0) {
      auto created = HugePageArena::Create(copy_bytes);
      if (created == nullptr) {
        return absl::ResourceExhaustedError(
            absl::StrCat(files_.dir(), ": cannot map ", copy_bytes, " bytes for weight copies"));
      }
      arena = created.get();
      impl_.arena = std::move(created);
    }
    for (Request& r : requests_) {
      torch::Tensor src =
          torch::from_blob(const_cast<void*>(r.info->data), r.shape,
                           torch::TensorOptions().dtype(ToScalarType(*r.info->dtype)));
      if (!NeedsCopy(r)) {
        impl_.mapped_bytes += r.info->nbytes;
        *r.dest = src;
        continue;
      }
      const size_t bytes = r.info->numel() * torch::elementSize(r.target);
      *r.dest =
          torch::from_blob(arena->Take(bytes), r.shape, torch::TensorOptions().dtype(r.target));
      r.dest->copy_(src);
      ReleaseSourcePages(*r.info);
      impl_.copied_bytes += bytes;
    }
    return absl::OkStatus();
  }

 private:
  struct Request {
    std::string name;
    std::vector<int64_t> shape;
    torch::ScalarType target;
    torch::Tensor* dest;
    const TensorInfo* info;
  };
  bool NeedsCopy(const Request& r) const {
    return copy_all_ || ToScalarType(*r.info->dtype) != r.target;
  }

  const WeightFiles& files_;
  LlamaEngine::Impl& impl_;
  const bool copy_all_;
  std::vector<Request> requests_;
};

// Quantizes tensor `name` of `shape` [rows, cols] into a new QuantizedMatrix
// owned by impl (rows split across libtorch's threads); *dest points at it.
// A matrix the weight source already holds in `format` (a GGUF file's
// Q8_0 / Q4_0 / Q4_1 blocks, WeightFiles::FindQuantized) is used as it is.
absl::Status Quantize(const WeightFiles& files, const std::string& name, std::vector<int64_t> shape,
                      weights::BlockFormat format, LlamaEngine::Impl& impl,
                      const weights::QuantizedMatrix** dest) {
  if (const weights::QuantizedMatrix* ready = files.FindQuantized(name); ready != nullptr) {
    if (ready->format() != format || ready->rows() != shape[0] || ready->cols() != shape[1]) {
      return absl::InvalidArgumentError(absl::StrCat(
          files.dir(), ": tensor '", name, "' is ",
          std::string(weights::BlockFormatName(ready->format())), " [", ready->rows(), ", ",
          ready->cols(), "], expected ", std::string(weights::BlockFormatName(format)), " [",
          shape[0], ", ", shape[1], "]"));
    }
    impl.copied_bytes += ready->bytes();
    *dest = ready;
    return absl::OkStatus();
  }
  QKV_ASSIGN_OR_RETURN(const TensorInfo* info, files.Get(name, shape));
  auto m = std::make_unique<weights::QuantizedMatrix>(format, shape[0], shape[1]);
  // The first error of any thread (a value that is not finite or past fp16's
  // range: the checkpoint is refused, naming the tensor, row and column).
  std::mutex error_mu;
  absl::Status error;
  at::parallel_for(0, shape[0], 64, [&](int64_t b, int64_t e) {
    absl::Status s = m->QuantizeRows(info->data, *info->dtype, b, e);
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (error.ok()) error = std::move(s);
    }
  });
  if (!error.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(files.dir(), ": tensor '", name, "' cannot be ",
                                                   std::string(weights::BlockFormatName(format)),
                                                   "-quantized: ", error.message()));
  }
  impl.copied_bytes += m->bytes();
  // The checkpoint's pages of this tensor are not needed any more.
  ReleaseSourcePages(*info);
  *dest = m.get();
  impl.quantized.push_back(std::move(m));
  return absl::OkStatus();
}

absl::Status LoadWeights(const WeightFiles& files, bool copy_all,
                         std::optional<weights::BlockFormat> quantize, LlamaEngine::Impl& impl) {
  const ModelConfig& c = impl.config;
  const torch::ScalarType cdt = impl.scalar;
  const torch::ScalarType wdt = impl.weight_scalar;
  const torch::ScalarType f32 = torch::kFloat;
  const int64_t D = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t QD = int64_t{c.num_heads} * c.head_dim, KVD = int64_t{c.num_kv_heads} * c.head_dim;
  WeightLoader w(files, impl, copy_all);
  // The embedding and lm_head of quantized models: as stored (q8) or in
  // their own block format (q4: q6), weights::EmbeddingFormat.
  const std::optional<weights::BlockFormat> embed_format =
      quantize.has_value() ? weights::EmbeddingFormat(*quantize) : std::nullopt;
  auto matrix = [&](const std::string& name, std::vector<int64_t> shape, torch::Tensor* dense,
                    const weights::QuantizedMatrix** q, bool embedding) -> absl::Status {
    const std::optional<weights::BlockFormat> format = embedding ? embed_format : quantize;
    if (!format.has_value()) {
      w.Add(name, std::move(shape), wdt, dense);
      return absl::OkStatus();
    }
    return Quantize(files, name, std::move(shape), *format, impl, q);
  };
  QKV_RETURN_IF_ERROR(
      matrix("model.embed_tokens.weight", {V, D}, &impl.embed, &impl.embed_q, true));
  impl.layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const std::string a = p + "self_attn.", m = p + "mlp.";
    LayerWeights& L = impl.layers[l];
    w.Add(p + "input_layernorm.weight", {D}, f32, &L.input_norm);
    QKV_RETURN_IF_ERROR(matrix(a + "q_proj.weight", {QD, D}, &L.q, &L.q_q, false));
    QKV_RETURN_IF_ERROR(matrix(a + "k_proj.weight", {KVD, D}, &L.k, &L.k_q, false));
    QKV_RETURN_IF_ERROR(matrix(a + "v_proj.weight", {KVD, D}, &L.v, &L.v_q, false));
    QKV_RETURN_IF_ERROR(matrix(a + "o_proj.weight", {D, QD}, &L.o, &L.o_q, false));
    w.Add(a + "q_proj.bias", {QD}, cdt, &L.q_bias, c.qkv_bias);
    w.Add(a + "k_proj.bias", {KVD}, cdt, &L.k_bias, c.qkv_bias);
    w.Add(a + "v_proj.bias", {KVD}, cdt, &L.v_bias, c.qkv_bias);
    w.Add(a + "o_proj.bias", {D}, cdt, &L.o_bias, c.o_bias);
    w.Add(p + "post_attention_layernorm.weight", {D}, f32, &L.post_norm);
    QKV_RETURN_IF_ERROR(matrix(m + "gate_proj.weight", {I, D}, &L.gate, &L.gate_q, false));
    QKV_RETURN_IF_ERROR(matrix(m + "up_proj.weight", {I, D}, &L.up, &L.up_q, false));
    QKV_RETURN_IF_ERROR(matrix(m + "down_proj.weight", {D, I}, &L.down, &L.down_q, false));
    w.Add(m + "gate_proj.bias", {I}, cdt, &L.gate_bias, c.mlp_bias);
    w.Add(m + "up_proj.bias", {I}, cdt, &L.up_bias, c.mlp_bias);
    w.Add(m + "down_proj.bias", {D}, cdt, &L.down_bias, c.mlp_bias);
  }
  w.Add("model.norm.weight", {D}, f32, &impl.final_norm);
  if (!c.tie_word_embeddings) {
    QKV_RETURN_IF_ERROR(matrix("lm_head.weight", {V, D}, &impl.lm_head, &impl.lm_head_q, true));
  }
  QKV_RETURN_IF_ERROR(w.Load());
  if (c.tie_word_embeddings) {
    impl.lm_head = impl.embed;
    impl.lm_head_q = impl.embed_q;
  }
  return absl::OkStatus();
}

// Raw views for kernels::DecodeStep.
void BuildDecodeWeights(LlamaEngine::Impl& impl) {
  const ModelConfig& c = impl.config;
  kernels::DecodeWeights& d = impl.decode;
  d.weight_dtype = impl.weight_dtype;
  d.kv_dtype = impl.dtype;
  d.hidden = c.hidden_size;
  d.intermediate = c.intermediate_size;
  d.num_heads = c.num_heads;
  d.num_kv_heads = c.num_kv_heads;
  d.head_dim = c.head_dim;
  d.vocab = c.vocab_size;
  d.rms_norm_eps = c.rms_norm_eps;
  auto encoding = [](const weights::QuantizedMatrix* q) {
    if (q == nullptr) return kernels::MatrixEncoding::kDense;
    switch (q->format()) {
      case weights::BlockFormat::kQ8:
        return kernels::MatrixEncoding::kQ8;
      case weights::BlockFormat::kQ4:
        return kernels::MatrixEncoding::kQ4;
      case weights::BlockFormat::kQ6:
        return kernels::MatrixEncoding::kQ6;
    }
    return kernels::MatrixEncoding::kDense;
  };
  // A dense tensor's data, or a quantized matrix's blocks.
  auto data = [](const torch::Tensor& t, const weights::QuantizedMatrix* q) -> const void* {
    return q != nullptr ? q->blocks() : t.data_ptr();
  };
  d.embed_encoding = encoding(impl.embed_q);
  if (!impl.layers.empty()) d.layer_encoding = encoding(impl.layers[0].q_q);
  d.embed = data(impl.embed, impl.embed_q);
  d.lm_head = data(impl.lm_head, impl.lm_head_q);
  d.final_norm = impl.final_norm.data_ptr<float>();
  d.rope_cos = impl.rope_cos.data_ptr<float>();
  d.rope_sin = impl.rope_sin.data_ptr<float>();
  d.rope_positions = impl.rope_cos.size(0);
  auto bias = [&](const torch::Tensor& b) -> const float* {
    if (!b.defined()) return nullptr;
    impl.decode_biases.push_back(b.to(torch::kFloat).contiguous());
    return impl.decode_biases.back().data_ptr<float>();
  };
  for (const LayerWeights& L : impl.layers) {
    kernels::DecodeLayerWeights k;
    k.q = data(L.q, L.q_q);
    k.k = data(L.k, L.k_q);
    k.v = data(L.v, L.v_q);
    k.o = data(L.o, L.o_q);
    k.gate = data(L.gate, L.gate_q);
    k.up = data(L.up, L.up_q);
    k.down = data(L.down, L.down_q);
    k.q_bias = bias(L.q_bias);
    k.k_bias = bias(L.k_bias);
    k.v_bias = bias(L.v_bias);
    k.o_bias = bias(L.o_bias);
    k.gate_bias = bias(L.gate_bias);
    k.up_bias = bias(L.up_bias);
    k.down_bias = bias(L.down_bias);
    k.input_norm = L.input_norm.data_ptr<float>();
    k.post_norm = L.post_norm.data_ptr<float>();
    d.layers.push_back(k);
  }
}

void BuildRopeTables(LlamaEngine::Impl& impl) {
  std::vector<float> inv = RopeInverseFrequencies(impl.config);
  torch::Tensor inv_freq =
      torch::from_blob(inv.data(), {static_cast<int64_t>(inv.size())}, torch::kFloat).clone();
  torch::Tensor pos = torch::arange(impl.config.context_limit(), torch::kFloat);
  torch::Tensor angles = torch::outer(pos, inv_freq);  // fp32, like HF
  impl.rope_cos = angles.cos().contiguous();
  impl.rope_sin = angles.sin().contiguous();
}

// libtorch allocates every intermediate tensor with malloc; glibc serves
// blocks above its mmap threshold (128 KiB, adapting up to 32 MiB) with fresh
// mmap()s, so each forward pass page-faults and zero-fills its activations
// again (measured: ~20% of a bf16 prefill). Raising the thresholds keeps those
// blocks in the heap for reuse. Process-wide, set once per process.
void KeepActivationMemory() {
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 512 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
  });
}

}  // namespace

torch::ScalarType ToScalarType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return torch::kFloat;
    case DType::kF16:
      return torch::kHalf;
    case DType::kBF16:
      return torch::kBFloat16;
  }
  return torch::kFloat;
}

std::vector<float> RopeInverseFrequencies(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    float exponent = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    inv[i] = 1.0f / std::pow(static_cast<float>(c.rope_theta), exponent);
  }
  const RopeScaling& s = c.rope_scaling;
  if (s.type == RopeScaling::Type::kLinear) {
    for (float& f : inv) f /= static_cast<float>(s.factor);
  } else if (s.type == RopeScaling::Type::kLlama3) {
    // transformers.modeling_rope_utils._compute_llama3_parameters.
    const float factor = static_cast<float>(s.factor);
    const float low = static_cast<float>(s.low_freq_factor);
    const float high = static_cast<float>(s.high_freq_factor);
    const float old_len = static_cast<float>(s.original_max_position_embeddings);
    const float low_freq_wavelen = old_len / low;
    const float high_freq_wavelen = old_len / high;
    for (float& f : inv) {
      const float wavelen = static_cast<float>(2 * M_PI) / f;
      if (wavelen > low_freq_wavelen) {
        f = f / factor;
      } else if (wavelen >= high_freq_wavelen) {
        const float smooth = (old_len / wavelen - low) / (high - low);
        f = (1 - smooth) * f / factor + smooth * f;
      }
    }
  }
  return inv;
}

LlamaEngine::LlamaEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LlamaEngine::~LlamaEngine() = default;

absl::StatusOr<std::unique_ptr<LlamaEngine>> LlamaEngine::Create(const ModelConfig& config,
                                                                 const WeightFiles& weights,
                                                                 const EngineOptions& options) {
  const DType compute_dtype = options.compute_dtype;
  if (compute_dtype != DType::kF32 && compute_dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "compute dtype ", std::string(DTypeName(compute_dtype)), " is not supported (f32, bf16)"));
  }
  if (options.weight_dtype != compute_dtype && compute_dtype != DType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat("weights in ", std::string(DTypeName(options.weight_dtype)),
                     " need f32 compute, not ", std::string(DTypeName(compute_dtype))));
  }
  KeepActivationMemory();
  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->dtype = compute_dtype;
  impl->scalar = ToScalarType(compute_dtype);
  impl->weight_dtype = options.weight_dtype;
  impl->weight_scalar = ToScalarType(options.weight_dtype);
  impl->decode_kernels = options.decode_kernels;
  if (options.quantized_gemm_dtype != DType::kF32 && options.quantized_gemm_dtype != DType::kBF16) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantized GEMM dtype ", std::string(DTypeName(options.quantized_gemm_dtype)),
                     " is not supported (f32, bf16)"));
  }
  impl->quantized_gemm_scalar = ToScalarType(options.quantized_gemm_dtype);
  try {
    torch::NoGradGuard no_grad;
    QKV_RETURN_IF_ERROR(
        LoadWeights(weights, options.copy_weights_to_huge_pages && TransparentHugePagesAvailable(),
                    options.quantize, *impl));
    BuildRopeTables(*impl);
    // decode_biases must not reallocate while pointers are taken.
    impl->decode_biases.reserve(7 * config.num_layers);
    BuildDecodeWeights(*impl);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(
        weights.dir(), ": libtorch failed while loading: ", e.what_without_backtrace()));
  }
  return std::unique_ptr<LlamaEngine>(new LlamaEngine(std::move(impl)));
}

DType LlamaEngine::compute_dtype() const { return impl_->dtype; }
size_t LlamaEngine::mapped_weight_bytes() const { return impl_->mapped_bytes; }
size_t LlamaEngine::copied_weight_bytes() const { return impl_->copied_bytes; }

void SetComputeThreads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(n);
  // fp32 GEMMs run in the BLAS libtorch links (Debian: libblas.so.3, OpenBLAS
  // when libopenblas0-pthread is installed), whose pthread pool ignores
  // at::set_num_threads.
  using SetBlasThreads = void (*)(int);
  if (auto set_blas =
          reinterpret_cast<SetBlasThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set_blas(n);
  }
}

int ComputeThreads() { return at::get_num_threads(); }

}  // namespace qkvshare::agents::internal

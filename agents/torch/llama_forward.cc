// LlamaEngine: the forward pass over one chunk of new tokens (libtorch).
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agents/kernels/matvec_quant.h"
#include "agents/torch/llama_engine.h"
#include "agents/torch/llama_impl.h"
#include "agents/torch/parallel.h"

namespace qkvshare::agents::internal {
namespace {

// `w` in the compute dtype: itself, or (16-bit weights under f32 compute) a
// temporary f32 copy, converted when the matrix is used and freed after it
// (per matrix, so the f32 copy of one layer at most is alive).
torch::Tensor InCompute(const torch::Tensor& w, torch::ScalarType cdt) {
  return w.scalar_type() == cdt ? w : w.to(cdt);
}

// Dequantizes rows [begin, end) of `q` into out ([end - begin, cols] fp32).
void DequantizeRows(const weights::QuantizedMatrix& q, int64_t begin, int64_t end, float* out) {
  switch (q.format()) {
    case weights::BlockFormat::kQ8:
      kernels::DequantizeQ8Rows(static_cast<const weights::BlockQ8*>(q.blocks()), q.cols(), begin,
                                end, out);
      return;
    case weights::BlockFormat::kQ4:
      kernels::DequantizeQ4Rows(static_cast<const weights::BlockQ4x8*>(q.blocks()), q.cols(), begin,
                                end, out);
      return;
    case weights::BlockFormat::kQ6:
      kernels::DequantizeQ6Rows(static_cast<const weights::BlockQ6x8*>(q.blocks()), q.cols(), begin,
                                end, out);
      return;
  }
}

// h [T, in] times the weight [out, in] transposed (+ bias): torch::linear on
// a dense weight (converted to h's dtype by InCompute when narrower); on a
// quantized one, tiles of about 1M weights are dequantized to fp32 (split
// across libtorch's threads), converted to `qgemm` (Impl::quantized_gemm_scalar:
// h's dtype, or bf16 on CPUs with native bf16 products, h then converted once)
// and multiplied with libtorch's GEMM, so no dense copy of the whole matrix is
// ever kept. The result is in h's dtype.
torch::Tensor Linear(const torch::Tensor& h, const torch::Tensor& w, const torch::Tensor& bias,
                     const weights::QuantizedMatrix* q, torch::ScalarType qgemm) {
  if (q == nullptr) return torch::linear(h, InCompute(w, h.scalar_type()), bias);
  const int64_t rows = q->rows(), cols = q->cols();
  const int64_t tile = std::max<int64_t>(64, (int64_t{1} << 20) / cols);
  const torch::Tensor hg = h.scalar_type() == qgemm ? h : h.to(qgemm);
  torch::Tensor out = torch::empty({h.size(0), rows}, h.options());
  torch::Tensor buf = torch::empty({std::min(tile, rows), cols}, torch::kFloat);
  for (int64_t r0 = 0; r0 < rows; r0 += tile) {
    const int64_t n = std::min(tile, rows - r0);
    float* dst = buf.data_ptr<float>();
    // Grain 16 rows (q4: two of its groups of 8; a range need not align).
    at::parallel_for(0, n, 16, [&](int64_t b, int64_t e) {
      DequantizeRows(*q, r0 + b, r0 + e, dst + b * cols);
    });
    torch::Tensor wt = buf.narrow(0, 0, n).to(qgemm);
    out.narrow(1, r0, n).copy_(torch::mm(hg, wt.t()));
  }
  if (bias.defined()) out.add_(bias);
  return out;
}

// Rows `ids` of the embedding (fp32 [T, D]).
torch::Tensor EmbedRows(const LlamaEngine::Impl& m, const torch::Tensor& ids) {
  if (m.embed_q == nullptr) return m.embed.index_select(0, ids).to(torch::kFloat);
  const int64_t T = ids.size(0), D = m.embed_q->cols();
  torch::Tensor x = torch::empty({T, D}, torch::kFloat);
  const int64_t* id = ids.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; ++t)
    DequantizeRows(*m.embed_q, id[t], id[t] + 1, x[t].data_ptr<float>());
  return x;
}

class TorchState : public LlamaEngine::State {
 public:
  kernels::DecodeScratch scratch;
};

// RMSNorm in fp32: x / sqrt(mean(x^2) + eps) * weight. x: [T, D] fp32.
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  return x * torch::rsqrt(x.square().mean(-1, /*keepdim=*/true) + eps) * weight;
}

// RoPE, rotate_half convention: x [T, heads, hd] fp32; cos/sin [T, 1, hd/2].
// (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), x1 = x[..., :hd/2].
torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& cos,
                        const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  torch::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  return torch::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
}

// Query rows per attention block in prefill. Block j of a chunk attends to
// keys [0, start + (j + 1) * kQueryBlock) only, so the masked upper triangle
// of the chunk is mostly not computed (at 512 new tokens: 37% fewer score
// and P.V products than one block).
constexpr int64_t kQueryBlock = 128;

// Causal GQA attention of the chunk's queries over the cache (no K/V copies
// per query head: query head kv * G + g uses kv head kv).
//   q: [T, H, hd] fp32, already scaled by 1/sqrt(hd);
//   keys, values: [KV, start + T, hd] views of the cache (compute dtype).
// Returns [T, H * hd] in `cdt`. Scores, softmax and P.V run in `cdt`
// (libtorch computes a bf16 softmax in fp32 and rounds once: measured equal
// to an fp32 softmax rounded to bf16, 1.7x faster than converting around it).
torch::Tensor Attend(const torch::Tensor& q, const torch::Tensor& keys, const torch::Tensor& values,
                     int64_t start, int64_t G, torch::ScalarType cdt, int layer,
                     AttentionRecorder* recorder) {
  const int64_t T = q.size(0), H = q.size(1), hd = q.size(2), KV = keys.size(0);
  // [KV, T, G, hd]: the rows (t, g) of a block of queries are contiguous.
  torch::Tensor qg = torch::empty({KV, T, G, hd}, torch::TensorOptions().dtype(cdt));
  qg.copy_(q.view({T, KV, G, hd}).permute({1, 0, 2, 3}));
  torch::Tensor out = torch::empty({T, H * hd}, torch::TensorOptions().dtype(cdt));
  const int64_t first_recorded =
      recorder == nullptr ? T : T - std::min<int64_t>(T, recorder->window());
  for (int64_t t0 = 0; t0 < T; t0 += kQueryBlock) {
    const int64_t tb = std::min(kQueryBlock, T - t0);
    const int64_t ctx = start + t0 + tb;  // keys visible to the block's last row
    torch::Tensor scores = torch::bmm(qg.narrow(1, t0, tb).view({KV, tb * G, hd}),
                                      keys.narrow(1, 0, ctx).transpose(1, 2));  // [KV, tb*G, ctx]
    if (tb > 1) {
      torch::Tensor mask = torch::full({tb, tb}, -std::numeric_limits<float>::infinity(),
                                       torch::TensorOptions().dtype(cdt))
                               .triu(1)
                               .unsqueeze(1);  // [tb, 1, tb]: row t sees keys <= t
      scores.view({KV, tb, G, ctx}).narrow(3, start + t0, tb).add_(mask);
    }
    torch::Tensor probs = torch::softmax(scores, -1);
    const int64_t r0 = std::max(t0, first_recorded);
    if (r0 < t0 + tb) {  // rows of this block among the last `window`
      torch::Tensor avg = probs.view({KV, tb, G, ctx})
                              .narrow(1, r0 - t0, t0 + tb - r0)
                              .to(torch::kFloat)
                              .mean(2)
                              .contiguous();  // [KV, rows, ctx]
      recorder->AddRows(layer, start + r0, t0 + tb - r0, avg.data_ptr<float>(), ctx);
    }
    out.narrow(0, t0, tb).copy_(torch::bmm(probs, values.narrow(1, 0, ctx))
                                    .view({KV, tb, G, hd})
                                    .permute({1, 0, 2, 3})
                                    .reshape({tb, H * hd}));
  }
  return out;
}

}  // namespace

std::unique_ptr<LlamaEngine::State> LlamaEngine::NewState() const {
  return std::make_unique<TorchState>();
}

absl::Status LlamaEngine::Forward(State& state, KvCache& cache, absl::Span<const int32_t> ids,
                                  LogitsMode mode, float* logits,
                                  AttentionRecorder* recorder) const {
  const Impl& m = *impl_;
  if (m.decode_kernels && static_cast<int64_t>(ids.size()) <= kernels::kMaxKernelChunkTokens) {
    kernels::DecodeChunk(m.decode, ids.data(), static_cast<int64_t>(ids.size()), cache,
                         static_cast<TorchState&>(state).scratch,
                         mode == LogitsMode::kNone ? nullptr : logits, mode == LogitsMode::kAll,
                         recorder, TorchParallelFor);
    return absl::OkStatus();
  }
  const ModelConfig& c = m.config;
  const int64_t T = static_cast<int64_t>(ids.size());
  const int64_t p0 = cache.length();
  const int64_t ctx = p0 + T;
  const int64_t H = c.num_heads, KV = c.num_kv_heads, G = c.group_size(), hd = c.head_dim;
  const int64_t cap = cache.capacity();
  const torch::ScalarType cdt = m.scalar;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  try {
    c10::InferenceMode inference;
    const auto cache_opts = torch::TensorOptions().dtype(cdt);
    torch::Tensor id_t =
        torch::from_blob(const_cast<int32_t*>(ids.data()), {T}, torch::kInt).to(torch::kLong);
    torch::Tensor x = EmbedRows(m, id_t);                          // [T, D] fp32
    torch::Tensor cos = m.rope_cos.narrow(0, p0, T).unsqueeze(1);  // [T, 1, hd/2]
    torch::Tensor sin = m.rope_sin.narrow(0, p0, T).unsqueeze(1);
    torch::Tensor cos_q = cos * scale, sin_q = sin * scale;
    for (int l = 0; l < c.num_layers; ++l) {
      const LayerWeights& L = m.layers[l];
      torch::Tensor h = RmsNorm(x, L.input_norm, c.rms_norm_eps).to(cdt);
      torch::Tensor q = Linear(h, L.q, L.q_bias, L.q_q, m.quantized_gemm_scalar)
                            .view({T, H, hd})
                            .to(torch::kFloat);
      torch::Tensor k = Linear(h, L.k, L.k_bias, L.k_q, m.quantized_gemm_scalar)
                            .view({T, KV, hd})
                            .to(torch::kFloat);
      torch::Tensor v = Linear(h, L.v, L.v_bias, L.v_q, m.quantized_gemm_scalar).view({T, KV, hd});
      q = ApplyRope(q, cos_q, sin_q);  // includes the 1/sqrt(head_dim) scale
      k = ApplyRope(k, cos, sin);

      torch::Tensor kc = torch::from_blob(cache.k_data(l), {KV, cap, hd}, cache_opts);
      torch::Tensor vc = torch::from_blob(cache.v_data(l), {KV, cap, hd}, cache_opts);
      kc.narrow(1, p0, T).copy_(k.transpose(0, 1));
      vc.narrow(1, p0, T).copy_(v.transpose(0, 1));
      torch::Tensor keys = kc.narrow(1, 0, ctx);    // [KV, ctx, hd]
      torch::Tensor values = vc.narrow(1, 0, ctx);  // [KV, ctx, hd]

      torch::Tensor attn = Attend(q, keys, values, p0, G, cdt, l, recorder);
      x.add_(Linear(attn, L.o, L.o_bias, L.o_q, m.quantized_gemm_scalar));

      h = RmsNorm(x, L.post_norm, c.rms_norm_eps).to(cdt);
      torch::Tensor g = Linear(h, L.gate, L.gate_bias, L.gate_q, m.quantized_gemm_scalar);
      torch::silu_(g).mul_(Linear(h, L.up, L.up_bias, L.up_q, m.quantized_gemm_scalar));
      x.add_(Linear(g, L.down, L.down_bias, L.down_q, m.quantized_gemm_scalar));
    }
    if (mode == LogitsMode::kNone) return absl::OkStatus();
    torch::Tensor rows = mode == LogitsMode::kLast ? x.narrow(0, T - 1, 1) : x;
    torch::Tensor hf = RmsNorm(rows, m.final_norm, c.rms_norm_eps).to(cdt);
    torch::Tensor out = torch::from_blob(logits, {rows.size(0), c.vocab_size}, torch::kFloat);
    if (rows.size(0) == 1 && cdt == torch::kFloat) {
      // One row (a prompt's last position): the decode kernels' matrix-vector
      // product, which reads 16-bit or q8 / q4 weights in place.
      const torch::Tensor hc = hf.contiguous();
      const float* hrow = hc.data_ptr<float>();
      const kernels::DecodeWeights& d = m.decode;
      at::parallel_for(0, c.vocab_size, 32, [&](int64_t b, int64_t e) {
        kernels::MatMulEncodedRows(d.lm_head, d.weight_dtype, d.embed_encoding, c.hidden_size, hrow,
                                   c.hidden_size, 1, nullptr, logits, c.vocab_size, b, e);
      });
    } else if (m.lm_head_q != nullptr) {
      out.copy_(Linear(hf, m.lm_head, torch::Tensor(), m.lm_head_q, m.quantized_gemm_scalar));
    } else if (cdt == torch::kFloat) {
      torch::mm_out(out, hf, InCompute(m.lm_head, cdt).t());
    } else {
      out.copy_(torch::mm(hf, m.lm_head.t()));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("forward at position ", p0, ": libtorch: ", e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

}  // namespace qkvshare::agents::internal

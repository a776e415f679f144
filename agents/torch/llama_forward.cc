// LlamaEngine: the forward pass over one chunk of new tokens (libtorch).
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agents/torch/llama_engine.h"
#include "agents/torch/llama_impl.h"

namespace qkvshare::agents::internal {
namespace {

class TorchState : public LlamaEngine::State {};

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

}  // namespace

std::unique_ptr<LlamaEngine::State> LlamaEngine::NewState() const {
  return std::make_unique<TorchState>();
}

absl::Status LlamaEngine::Forward(State& state, KvCache& cache, absl::Span<const int32_t> ids,
                                  LogitsMode mode, float* logits,
                                  AttentionRecorder* recorder) const {
  (void)state;
  const Impl& m = *impl_;
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
    torch::Tensor x = m.embed.index_select(0, id_t).to(torch::kFloat);  // [T, D]
    torch::Tensor cos = m.rope_cos.narrow(0, p0, T).unsqueeze(1);       // [T, 1, hd/2]
    torch::Tensor sin = m.rope_sin.narrow(0, p0, T).unsqueeze(1);
    torch::Tensor mask;
    if (T > 1) {
      mask = torch::full({T, T}, -std::numeric_limits<float>::infinity(), torch::kFloat).triu(1);
    }
    for (int l = 0; l < c.num_layers; ++l) {
      const LayerWeights& L = m.layers[l];
      torch::Tensor h = RmsNorm(x, L.input_norm, c.rms_norm_eps).to(cdt);
      torch::Tensor q = torch::linear(h, L.q, L.q_bias).view({T, H, hd}).to(torch::kFloat);
      torch::Tensor k = torch::linear(h, L.k, L.k_bias).view({T, KV, hd}).to(torch::kFloat);
      torch::Tensor v = torch::linear(h, L.v, L.v_bias).view({T, KV, hd});
      q = ApplyRope(q, cos, sin);
      k = ApplyRope(k, cos, sin);

      torch::Tensor kc = torch::from_blob(cache.k_data(l), {KV, cap, hd}, cache_opts);
      torch::Tensor vc = torch::from_blob(cache.v_data(l), {KV, cap, hd}, cache_opts);
      kc.narrow(1, p0, T).copy_(k.transpose(0, 1));
      vc.narrow(1, p0, T).copy_(v.transpose(0, 1));
      torch::Tensor keys = kc.narrow(1, 0, ctx);    // [KV, ctx, hd]
      torch::Tensor values = vc.narrow(1, 0, ctx);  // [KV, ctx, hd]

      // GQA without repeating K/V: query head kv*G + g attends with kv head kv.
      torch::Tensor qg =
          (q * scale).view({T, KV, G, hd}).permute({1, 2, 0, 3}).reshape({KV, G * T, hd}).to(cdt);
      torch::Tensor scores =
          torch::bmm(qg, keys.transpose(1, 2)).to(torch::kFloat).view({KV, G, T, ctx});
      if (T > 1) scores.narrow(3, p0, T).add_(mask);
      torch::Tensor probs = torch::softmax(scores, -1);  // fp32
      if (recorder != nullptr) {
        const int64_t rows = std::min<int64_t>(T, recorder->window());
        torch::Tensor avg = probs.narrow(2, T - rows, rows).mean(1).contiguous();  // [KV,rows,ctx]
        recorder->AddRows(l, p0 + T - rows, rows, avg.data_ptr<float>(), ctx);
      }
      torch::Tensor attn = torch::bmm(probs.view({KV, G * T, ctx}).to(cdt), values)
                               .view({KV, G, T, hd})
                               .permute({2, 0, 1, 3})
                               .reshape({T, H * hd});
      x.add_(torch::linear(attn, L.o, L.o_bias));

      h = RmsNorm(x, L.post_norm, c.rms_norm_eps).to(cdt);
      torch::Tensor a = torch::silu(torch::linear(h, L.gate, L.gate_bias))
                            .mul_(torch::linear(h, L.up, L.up_bias));
      x.add_(torch::linear(a, L.down, L.down_bias));
    }
    if (mode == LogitsMode::kNone) return absl::OkStatus();
    torch::Tensor rows = mode == LogitsMode::kLast ? x.narrow(0, T - 1, 1) : x;
    torch::Tensor hf = RmsNorm(rows, m.final_norm, c.rms_norm_eps).to(cdt);
    torch::Tensor out = torch::from_blob(logits, {rows.size(0), c.vocab_size}, torch::kFloat);
    if (cdt == torch::kFloat) {
      torch::mm_out(out, hf, m.lm_head.t());
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

#include "agents/kernels/decode_step.h"

#include <algorithm>
#include <cmath>

#include "agents/kernels/matvec.h"

namespace qkvshare::agents::kernels {
namespace {

// Rows per parallel chunk of a matrix-vector product (a few KB of weights).
constexpr int64_t kRowGrain = 32;

// One logical matrix of a fused product: rows [begin, end) of the fused
// output come from `w` (rows 0 .. end - begin).
struct Segment {
  int64_t begin, end;
  const void* w;
  const float* bias;
};

// y[r] for fused rows r in [0, total) over several matrices sharing x.
void FusedMatVec(std::initializer_list<Segment> segments, DType dtype, int64_t cols, const float* x,
                 float* y, const ParallelFor& parallel_for) {
  const Segment* segs = segments.begin();
  const size_t n = segments.size();
  const int64_t total = segs[n - 1].end;
  parallel_for(total, kRowGrain, [&](int64_t b, int64_t e) {
    for (size_t s = 0; s < n; ++s) {
      const int64_t lo = std::max(b, segs[s].begin), hi = std::min(e, segs[s].end);
      if (lo >= hi) continue;
      const int64_t off = segs[s].begin;
      MatVecRows(segs[s].w, dtype, cols, x, segs[s].bias, y + off, lo - off, hi - off);
    }
  });
}

// Applies RoPE in place to `heads` vectors of head_dim at `v`.
void Rope(float* v, int heads, int head_dim, const float* cos, const float* sin) {
  const int half = head_dim / 2;
  for (int h = 0; h < heads; ++h) {
    float* p = v + h * head_dim;
    for (int i = 0; i < half; ++i) {
      const float x1 = p[i], x2 = p[i + half];
      p[i] = x1 * cos[i] - x2 * sin[i];
      p[i + half] = x2 * cos[i] + x1 * sin[i];
    }
  }
}

}  // namespace

void DecodeStep(const DecodeWeights& w, int32_t token, KvCache& cache, DecodeScratch& s,
                float* logits, AttentionRecorder* recorder, const ParallelFor& parallel_for) {
  const int64_t D = w.hidden, I = w.intermediate, H = w.num_heads, KV = w.num_kv_heads;
  const int64_t hd = w.head_dim, G = H / KV, QD = H * hd, KVD = KV * hd;
  const int64_t pos = cache.length(), ctx = pos + 1;
  const DType dt = w.dtype;
  const size_t esize = DTypeSize(dt);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  s.x.resize(D);
  s.h.resize(D);
  s.tmp.resize(D);
  s.qkv.resize(QD + 2 * KVD);
  s.attn.resize(QD);
  s.mlp.resize(2 * I);
  s.probs.resize(H * ctx);
  if (recorder != nullptr) s.avg.resize(KV * ctx);

  // Embedding row, widened to fp32.
  const char* erow = static_cast<const char*>(w.embed) + token * D * esize;
  for (int64_t i = 0; i < D; ++i) {
    s.x[i] = dt == DType::kF32 ? reinterpret_cast<const float*>(erow)[i]
                               : Bf16ToFloat(reinterpret_cast<const uint16_t*>(erow)[i]);
  }
  const float* cos = w.rope_cos + pos * (hd / 2);
  const float* sin = w.rope_sin + pos * (hd / 2);
  const int64_t head_stride = cache.head_stride();

  for (size_t l = 0; l < w.layers.size(); ++l) {
    const DecodeLayerWeights& L = w.layers[l];
    RmsNorm(s.x.data(), L.input_norm, w.rms_norm_eps, D, s.h.data());
    FusedMatVec({{0, QD, L.q, L.q_bias},
                 {QD, QD + KVD, L.k, L.k_bias},
                 {QD + KVD, QD + 2 * KVD, L.v, L.v_bias}},
                dt, D, s.h.data(), s.qkv.data(), parallel_for);
    float* q = s.qkv.data();
    float* k = q + QD;
    const float* v = k + KVD;
    Rope(q, static_cast<int>(H), static_cast<int>(hd), cos, sin);
    Rope(k, static_cast<int>(KV), static_cast<int>(hd), cos, sin);
    char* kc = static_cast<char*>(cache.k_data(static_cast<int>(l)));
    char* vc = static_cast<char*>(cache.v_data(static_cast<int>(l)));
    for (int64_t kh = 0; kh < KV; ++kh) {
      StoreAs(k + kh * hd, dt, kc + (kh * head_stride + pos * hd) * esize, hd);
      StoreAs(v + kh * hd, dt, vc + (kh * head_stride + pos * hd) * esize, hd);
    }
    // Attention, one kv head (its group of G query heads, which are
    // consecutive: query head h uses kv head h / G) per task. The
    // 1/sqrt(head_dim) scale goes into q.
    for (int64_t i = 0; i < QD; ++i) q[i] *= scale;
    parallel_for(KV, 1, [&](int64_t kb, int64_t ke) {
      for (int64_t kh = kb; kh < ke; ++kh) {
        AttendQueryGroup(q + kh * G * hd, G, kc + kh * head_stride * esize,
                         vc + kh * head_stride * esize, dt, ctx, hd, s.probs.data() + kh * G * ctx,
                         s.attn.data() + kh * G * hd);
      }
    });
    if (recorder != nullptr) {
      std::fill(s.avg.begin(), s.avg.end(), 0.0f);
      for (int64_t h = 0; h < H; ++h) {
        float* a = s.avg.data() + (h / G) * ctx;
        const float* p = s.probs.data() + h * ctx;
        for (int64_t t = 0; t < ctx; ++t) a[t] += p[t] / static_cast<float>(G);
      }
      recorder->AddRows(static_cast<int>(l), pos, 1, s.avg.data(), ctx);
    }
    FusedMatVec({{0, D, L.o, L.o_bias}}, dt, QD, s.attn.data(), s.tmp.data(), parallel_for);
    for (int64_t i = 0; i < D; ++i) s.x[i] += s.tmp[i];

    RmsNorm(s.x.data(), L.post_norm, w.rms_norm_eps, D, s.h.data());
    FusedMatVec({{0, I, L.gate, L.gate_bias}, {I, 2 * I, L.up, L.up_bias}}, dt, D, s.h.data(),
                s.mlp.data(), parallel_for);
    for (int64_t i = 0; i < I; ++i) {
      const float g = s.mlp[i];
      s.mlp[i] = g / (1.0f + std::exp(-g)) * s.mlp[I + i];
    }
    FusedMatVec({{0, D, L.down, L.down_bias}}, dt, I, s.mlp.data(), s.tmp.data(), parallel_for);
    for (int64_t i = 0; i < D; ++i) s.x[i] += s.tmp[i];
  }
  if (logits == nullptr) return;
  RmsNorm(s.x.data(), w.final_norm, w.rms_norm_eps, D, s.h.data());
  FusedMatVec({{0, w.vocab, w.lm_head, nullptr}}, dt, D, s.h.data(), logits, parallel_for);
}

}  // namespace qkvshare::agents::kernels

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

}  // namespace

void DecodeStep(const DecodeWeights& w, int32_t token, KvCache& cache, DecodeScratch& s,
                float* logits, AttentionRecorder* recorder, const ParallelFor& parallel_for) {
  const int64_t D = w.hidden, I = w.intermediate, H = w.num_heads, KV = w.num_kv_heads;
  const int64_t hd = w.head_dim, G = H / KV, QD = H * hd, KVD = KV * hd;
  const int64_t pos = cache.length(), ctx = pos + 1;
  const DType wt = w.weight_dtype, kvt = w.kv_dtype;
  const size_t esize = DTypeSize(kvt);
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
  WidenToF32(static_cast<const char*>(w.embed) + token * D * DTypeSize(wt), wt, s.x.data(), D);
  const float* cos = w.rope_cos + pos * (hd / 2);
  const float* sin = w.rope_sin + pos * (hd / 2);
  const int64_t head_stride = cache.head_stride();

  for (size_t l = 0; l < w.layers.size(); ++l) {
    const DecodeLayerWeights& L = w.layers[l];
    RmsNorm(s.x.data(), L.input_norm, w.rms_norm_eps, D, s.h.data());
    FusedMatVec({{0, QD, L.q, L.q_bias},
                 {QD, QD + KVD, L.k, L.k_bias},
                 {QD + KVD, QD + 2 * KVD, L.v, L.v_bias}},
                wt, D, s.h.data(), s.qkv.data(), parallel_for);
    float* q = s.qkv.data();
    float* k = q + QD;
    const float* v = k + KVD;
    // The 1/sqrt(head_dim) attention scale goes into q.
    Rope(q, H, hd, cos, sin, scale);
    Rope(k, KV, hd, cos, sin, 1.0f);
    char* kc = static_cast<char*>(cache.k_data(static_cast<int>(l)));
    char* vc = static_cast<char*>(cache.v_data(static_cast<int>(l)));
    for (int64_t kh = 0; kh < KV; ++kh) {
      StoreAs(k + kh * hd, kvt, kc + (kh * head_stride + pos * hd) * esize, hd);
      StoreAs(v + kh * hd, kvt, vc + (kh * head_stride + pos * hd) * esize, hd);
    }
    // Attention, one kv head (its group of G query heads, which are
    // consecutive: query head h uses kv head h / G) per task.
    parallel_for(KV, 1, [&](int64_t kb, int64_t ke) {
      for (int64_t kh = kb; kh < ke; ++kh) {
        AttendQueryGroup(q + kh * G * hd, G, kc + kh * head_stride * esize,
                         vc + kh * head_stride * esize, kvt, ctx, hd, s.probs.data() + kh * G * ctx,
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
    FusedMatVec({{0, D, L.o, L.o_bias}}, wt, QD, s.attn.data(), s.tmp.data(), parallel_for);
    AddInPlace(s.x.data(), s.tmp.data(), D);

    RmsNorm(s.x.data(), L.post_norm, w.rms_norm_eps, D, s.h.data());
    FusedMatVec({{0, I, L.gate, L.gate_bias}, {I, 2 * I, L.up, L.up_bias}}, wt, D, s.h.data(),
                s.mlp.data(), parallel_for);
    SwiGlu(s.mlp.data(), s.mlp.data() + I, I, s.mlp.data());
    FusedMatVec({{0, D, L.down, L.down_bias}}, wt, I, s.mlp.data(), s.tmp.data(), parallel_for);
    AddInPlace(s.x.data(), s.tmp.data(), D);
  }
  if (logits == nullptr) return;
  RmsNorm(s.x.data(), w.final_norm, w.rms_norm_eps, D, s.h.data());
  FusedMatVec({{0, w.vocab, w.lm_head, nullptr}}, wt, D, s.h.data(), logits, parallel_for);
}

}  // namespace qkvshare::agents::kernels

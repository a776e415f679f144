#include "agents/kernels/decode_step.h"

#include <algorithm>
#include <cmath>

#include "agents/kernels/matvec.h"
#include "agents/kernels/matvec_quant.h"

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

// Y[t, r] for fused rows r in [0, total) over several matrices (all of one
// encoding) sharing the n input vectors X[t] (row stride x_stride); Y rows
// have stride y_stride.
void FusedMatMul(std::initializer_list<Segment> segments, DType dtype, MatrixEncoding encoding,
                 int64_t cols, const float* x, int64_t x_stride, int64_t n, float* y,
                 int64_t y_stride, const ParallelFor& parallel_for) {
  const Segment* segs = segments.begin();
  const size_t count = segments.size();
  const int64_t total = segs[count - 1].end;
  parallel_for(total, kRowGrain, [&](int64_t b, int64_t e) {
    for (size_t s = 0; s < count; ++s) {
      const int64_t lo = std::max(b, segs[s].begin), hi = std::min(e, segs[s].end);
      if (lo >= hi) continue;
      const int64_t off = segs[s].begin;
      MatMulEncodedRows(segs[s].w, dtype, encoding, cols, x, x_stride, n, segs[s].bias, y + off,
                        y_stride, lo - off, hi - off);
    }
  });
}

// Row `token` of the embedding, as fp32 [hidden] in out.
void EmbeddingRow(const DecodeWeights& w, int32_t token, float* out) {
  const int64_t D = w.hidden;
  switch (w.embed_encoding) {
    case MatrixEncoding::kDense:
      WidenToF32(static_cast<const char*>(w.embed) + token * D * DTypeSize(w.weight_dtype),
                 w.weight_dtype, out, D);
      return;
    case MatrixEncoding::kQ8:
      DequantizeQ8Rows(static_cast<const weights::BlockQ8*>(w.embed), D, token, token + 1, out);
      return;
    case MatrixEncoding::kQ4:
      DequantizeQ4Rows(static_cast<const weights::BlockQ4x8*>(w.embed), D, token, token + 1, out);
      return;
    case MatrixEncoding::kQ6:
      DequantizeQ6Rows(static_cast<const weights::BlockQ6x8*>(w.embed), D, token, token + 1, out);
      return;
  }
}

}  // namespace

void MatMulEncodedRows(const void* w, DType dtype, MatrixEncoding encoding, int64_t cols,
                       const float* x, int64_t x_stride, int64_t n, const float* bias, float* y,
                       int64_t y_stride, int64_t begin, int64_t end) {
  if (encoding == MatrixEncoding::kDense) {
    MatMulRows(w, dtype, cols, x, x_stride, n, bias, y, y_stride, begin, end);
    return;
  }
  for (int64_t t = 0; t < n; ++t) {
    const float* xt = x + t * x_stride;
    float* yt = y + t * y_stride;
    if (encoding == MatrixEncoding::kQ8) {
      MatVecQ8Rows(static_cast<const weights::BlockQ8*>(w), cols, xt, yt, begin, end);
    } else if (encoding == MatrixEncoding::kQ4) {
      MatVecQ4Rows(static_cast<const weights::BlockQ4x8*>(w), cols, xt, yt, begin, end);
    } else {
      MatVecQ6Rows(static_cast<const weights::BlockQ6x8*>(w), cols, xt, yt, begin, end);
    }
    if (bias != nullptr) {
      for (int64_t r = begin; r < end; ++r) yt[r] += bias[r];
    }
  }
}

void DecodeStep(const DecodeWeights& w, int32_t token, KvCache& cache, DecodeScratch& s,
                float* logits, AttentionRecorder* recorder, const ParallelFor& parallel_for) {
  DecodeChunk(w, &token, 1, cache, s, logits, /*all_logits=*/false, recorder, parallel_for);
}

void DecodeChunk(const DecodeWeights& w, const int32_t* tokens, int64_t n, KvCache& cache,
                 DecodeScratch& s, float* logits, bool all_logits, AttentionRecorder* recorder,
                 const ParallelFor& parallel_for) {
  const int64_t D = w.hidden, I = w.intermediate, H = w.num_heads, KV = w.num_kv_heads;
  const int64_t hd = w.head_dim, G = H / KV, QD = H * hd, KVD = KV * hd, QKV = QD + 2 * KVD;
  const int64_t pos0 = cache.length(), ctx_max = pos0 + n;
  const DType wt = w.weight_dtype, kvt = w.kv_dtype;
  const size_t esize = DTypeSize(kvt);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  s.x.resize(n * D);
  s.h.resize(n * D);
  s.tmp.resize(n * D);
  s.qkv.resize(n * QKV);
  s.attn.resize(n * QD);
  s.mlp.resize(n * 2 * I);
  s.probs.resize(n * H * ctx_max);
  // Rows fed to the recorder: the last window() of the chunk.
  const int64_t first_recorded =
      recorder == nullptr ? n : n - std::min<int64_t>(n, recorder->window());
  if (recorder != nullptr) s.avg.resize((n - first_recorded) * KV * ctx_max);

  for (int64_t t = 0; t < n; ++t) EmbeddingRow(w, tokens[t], s.x.data() + t * D);
  const MatrixEncoding le = w.layer_encoding;
  const int64_t head_stride = cache.head_stride();

  for (size_t l = 0; l < w.layers.size(); ++l) {
    const DecodeLayerWeights& L = w.layers[l];
    for (int64_t t = 0; t < n; ++t) {
      RmsNorm(s.x.data() + t * D, L.input_norm, w.rms_norm_eps, D, s.h.data() + t * D);
    }
    FusedMatMul(
        {{0, QD, L.q, L.q_bias}, {QD, QD + KVD, L.k, L.k_bias}, {QD + KVD, QKV, L.v, L.v_bias}}, wt,
        le, D, s.h.data(), D, n, s.qkv.data(), QKV, parallel_for);
    char* kc = static_cast<char*>(cache.k_data(static_cast<int>(l)));
    char* vc = static_cast<char*>(cache.v_data(static_cast<int>(l)));
    for (int64_t t = 0; t < n; ++t) {
      const int64_t pos = pos0 + t;
      float* q = s.qkv.data() + t * QKV;
      float* k = q + QD;
      const float* v = k + KVD;
      const float* cos = w.rope_cos + pos * (hd / 2);
      const float* sin = w.rope_sin + pos * (hd / 2);
      // The 1/sqrt(head_dim) attention scale goes into q.
      Rope(q, H, hd, cos, sin, scale);
      Rope(k, KV, hd, cos, sin, 1.0f);
      for (int64_t kh = 0; kh < KV; ++kh) {
        StoreAs(k + kh * hd, kvt, kc + (kh * head_stride + pos * hd) * esize, hd);
        StoreAs(v + kh * hd, kvt, vc + (kh * head_stride + pos * hd) * esize, hd);
      }
    }
    // Attention. Each task is one kv head (its group of G query heads, which
    // are consecutive: query head h uses kv head h / G) for a range of the
    // chunk's tokens; token t sees the cache up to its own position. A chunk
    // splits its tokens into up to kAttnTokenParts ranges so that the tasks
    // balance across threads (3 kv heads alone on 2 threads run 2 + 1);
    // the split costs nothing measurable on one thread and does not change
    // the results (AttendChunk computes each query alike in any range).
    constexpr int64_t kAttnTokenParts = 4;  // e.g. 3 kv heads x 4: 2, 3 or 4 threads
    const int64_t parts = std::min(n, kAttnTokenParts);
    parallel_for(KV * parts, 1, [&](int64_t b, int64_t e) {
      for (int64_t task = b; task < e; ++task) {
        const int64_t kh = task / parts, part = task % parts;
        const int64_t t0 = n * part / parts, t1 = n * (part + 1) / parts;
        float* probs = s.probs.data() + kh * n * G * ctx_max;  // [n, G, ctx_max]
        AttendChunk(s.qkv.data() + t0 * QKV + kh * G * hd, QKV, t1 - t0, G,
                    kc + kh * head_stride * esize, vc + kh * head_stride * esize, kvt,
                    pos0 + 1 + t0, hd, probs + t0 * G * ctx_max, ctx_max,
                    s.attn.data() + t0 * QD + kh * G * hd, QD);
        for (int64_t t = std::max(t0, first_recorded); t < t1; ++t) {
          const int64_t ctx = pos0 + t + 1;
          float* a = s.avg.data() + ((t - first_recorded) * KV + kh) * ctx_max;
          std::fill(a, a + ctx, 0.0f);
          for (int64_t g = 0; g < G; ++g) {
            const float* pg = probs + (t * G + g) * ctx_max;
            for (int64_t c = 0; c < ctx; ++c) a[c] += pg[c] / static_cast<float>(G);
          }
        }
      }
    });
    for (int64_t t = first_recorded; t < n; ++t) {
      recorder->AddRows(static_cast<int>(l), pos0 + t, 1,
                        s.avg.data() + (t - first_recorded) * KV * ctx_max, ctx_max);
    }
    FusedMatMul({{0, D, L.o, L.o_bias}}, wt, le, QD, s.attn.data(), QD, n, s.tmp.data(), D,
                parallel_for);
    AddInPlace(s.x.data(), s.tmp.data(), n * D);

    for (int64_t t = 0; t < n; ++t) {
      RmsNorm(s.x.data() + t * D, L.post_norm, w.rms_norm_eps, D, s.h.data() + t * D);
    }
    FusedMatMul({{0, I, L.gate, L.gate_bias}, {I, 2 * I, L.up, L.up_bias}}, wt, le, D, s.h.data(),
                D, n, s.mlp.data(), 2 * I, parallel_for);
    for (int64_t t = 0; t < n; ++t) {
      float* m = s.mlp.data() + t * 2 * I;
      SwiGlu(m, m + I, I, m);
    }
    FusedMatMul({{0, D, L.down, L.down_bias}}, wt, le, I, s.mlp.data(), 2 * I, n, s.tmp.data(), D,
                parallel_for);
    AddInPlace(s.x.data(), s.tmp.data(), n * D);
  }
  if (logits == nullptr) return;
  const int64_t first = all_logits ? 0 : n - 1;
  for (int64_t t = first; t < n; ++t) {
    RmsNorm(s.x.data() + t * D, w.final_norm, w.rms_norm_eps, D, s.h.data() + t * D);
  }
  FusedMatMul({{0, w.vocab, w.lm_head, nullptr}}, wt, w.embed_encoding, D, s.h.data() + first * D,
              D, n - first, logits, w.vocab, parallel_for);
}

}  // namespace qkvshare::agents::kernels

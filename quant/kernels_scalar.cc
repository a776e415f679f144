// Portable scalar row primitives of quant/kernels_internal.h: the reference
// the Highway path (kernels_hwy.cc) must match bit for bit on every target. Straight loops, element
// conversions through base/dtype.h and quant/fp16.h.
#include <cstdint>
#include <cstring>

#include "base/dtype.h"
#include "quant/fp16.h"
#include "quant/kernels_internal.h"

namespace qkvshare::quant::internal {
namespace {

// One dtype's element access.
template <DType D>
struct Elem {
  static float Load(const void* p, int64_t i) { return LoadElem<D>(p, i); }
  static void Store(void* p, int64_t i, float v) { StoreElem<D>(p, i, v); }
};

// Calls f(c, i) for every channel c of token t, i = element index in the view.
template <typename View, typename F>
inline void ForRow(const View& v, int64_t t, F&& f) {
  for (int h = 0; h < v.num_heads; ++h) {
    const int64_t base = h * v.head_stride + t * v.head_dim;
    const int c0 = h * v.head_dim;
    for (int d = 0; d < v.head_dim; ++d) f(c0 + d, base + d);
  }
}

// Calls fn.template operator()<D>() for the runtime dtype.
template <typename Fn>
auto DispatchDType(DType d, Fn&& fn) {
  switch (d) {
    case DType::kBF16:
      return fn(Elem<DType::kBF16>{});
    case DType::kF16:
      return fn(Elem<DType::kF16>{});
    case DType::kF32:
    default:
      return fn(Elem<DType::kF32>{});
  }
}

bool MinMaxPerChannel(const ConstKvView& src, int64_t t0, int nt, const uint8_t* bits, float* mn,
                      float* mx) {
  const int channels = src.channels();
  for (int c = 0; c < channels; ++c) {
    mn[c] = kFp16Max * 2;
    mx[c] = -kFp16Max * 2;
  }
  return DispatchDType(src.dtype, [&](auto e) {
    using E = decltype(e);
    bool ok = true;
    for (int i = 0; i < nt; ++i) {
      const bool coded = bits[i] <= 8;
      ForRow(src, t0 + i, [&](int c, int64_t j) {
        const float x = E::Load(src.data, j);
        ok &= Finite16(x);
        if (coded) {
          mn[c] = x < mn[c] ? x : mn[c];
          mx[c] = x > mx[c] ? x : mx[c];
        }
      });
    }
    return ok;
  });
}

bool MinMaxPerToken(const ConstKvView& src, int64_t t, int group_size, float* mn, float* mx) {
  const int groups = (src.channels() + group_size - 1) / group_size;
  for (int g = 0; g < groups; ++g) {
    mn[g] = kFp16Max * 2;
    mx[g] = -kFp16Max * 2;
  }
  return DispatchDType(src.dtype, [&](auto e) {
    using E = decltype(e);
    bool ok = true;
    ForRow(src, t, [&](int c, int64_t j) {
      const float x = E::Load(src.data, j);
      const int g = c / group_size;
      ok &= Finite16(x);
      mn[g] = x < mn[g] ? x : mn[g];
      mx[g] = x > mx[g] ? x : mx[g];
    });
    return ok;
  });
}

void MakeParams(const float* mn, const float* mx, int n, uint8_t* out, float* lo, float* range) {
  for (int i = 0; i < n; ++i) {
    // "+ 0.0f" turns -0 into +0, so every path stores the same bits.
    const uint16_t l = FloatToHalf(mn[i] + 0.0f, Fp16Rounding::kDown);
    const uint16_t h = FloatToHalf(mx[i] + 0.0f, Fp16Rounding::kUp);
    WriteU16(out + 2 * i, l);
    WriteU16(out + 2 * (n + i), h);
    lo[i] = HalfToFloat(l);
    range[i] = HalfToFloat(h) - lo[i];
  }
}

inline bool HalfFinite(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }

// fp16 bits -> an integer of the same order as the values (-0 == +0).
inline int32_t HalfOrderKey(uint16_t h) {
  return (h & 0x8000u) ? 0x8000 - static_cast<int32_t>(h & 0x7fffu) : 0x8000 + h;
}

bool ParamsValid(const uint8_t* in, int n) {
  bool ok = true;
  for (int i = 0; i < n; ++i) {
    const uint16_t lo = ReadU16(in + 2 * i), hi = ReadU16(in + 2 * (n + i));
    ok &= HalfFinite(lo) & HalfFinite(hi) & (HalfOrderKey(lo) <= HalfOrderKey(hi));
  }
  return ok;
}

bool RawRowValid(const uint8_t* in, int channels) {
  bool ok = true;
  for (int c = 0; c < channels; ++c) ok &= HalfFinite(ReadU16(in + 2 * c));
  return ok;
}

void LoadParams(const uint8_t* in, int n, float* lo, float* range) {
  for (int i = 0; i < n; ++i) {
    lo[i] = HalfToFloat(ReadU16(in + 2 * i));
    range[i] = HalfToFloat(ReadU16(in + 2 * (n + i))) - lo[i];
  }
}

void ScaleTable(const float* range, int n, int bits, float* scale) {
  const float levels = static_cast<float>((1 << bits) - 1);
  for (int i = 0; i < n; ++i) scale[i] = range[i] > 0.0f ? levels / range[i] : 0.0f;
}

void StepTable(const float* range, int n, int bits, float* step) {
  const float levels = static_cast<float>((1 << bits) - 1);
  for (int i = 0; i < n; ++i) step[i] = range[i] / levels;
}

void QuantizeRowPerChannel(const ConstKvView& src, int64_t t, const float* lo, const float* scale,
                           int bits, uint8_t* codes) {
  const float levels = static_cast<float>((1 << bits) - 1);
  DispatchDType(src.dtype, [&](auto e) {
    using E = decltype(e);
    ForRow(src, t, [&](int c, int64_t j) {
      const float x = E::Load(src.data, j);
      codes[c] = static_cast<uint8_t>(static_cast<int>(Quantize1(x, lo[c], scale[c], levels)));
    });
    return 0;
  });
}

void QuantizeRowPerToken(const ConstKvView& src, int64_t t, int group_size, const float* lo,
                         const float* scale, int bits, uint8_t* codes) {
  const float levels = static_cast<float>((1 << bits) - 1);
  DispatchDType(src.dtype, [&](auto e) {
    using E = decltype(e);
    ForRow(src, t, [&](int c, int64_t j) {
      const int g = c / group_size;
      const float x = E::Load(src.data, j);
      codes[c] = static_cast<uint8_t>(static_cast<int>(Quantize1(x, lo[g], scale[g], levels)));
    });
    return 0;
  });
}

bool RawRow(const ConstKvView& src, int64_t t, uint8_t* out) {
  return DispatchDType(src.dtype, [&](auto e) {
    using E = decltype(e);
    bool ok = true;
    ForRow(src, t, [&](int c, int64_t j) {
      const float x = E::Load(src.data, j);
      ok &= Finite16(x);
      WriteU16(out + 2 * c, FloatToHalf(x));
    });
    return ok;
  });
}

// LSB-first: code i occupies bits [i*b, (i+1)*b) of the row read as a
// little-endian integer.
void PackRow(const uint8_t* codes, int channels, int bits, uint8_t* out) {
  uint32_t acc = 0;
  int filled = 0;
  size_t o = 0;
  for (int c = 0; c < channels; ++c) {
    acc |= static_cast<uint32_t>(codes[c]) << filled;
    filled += bits;
    while (filled >= 8) {
      out[o++] = static_cast<uint8_t>(acc & 0xff);
      acc >>= 8;
      filled -= 8;
    }
  }
  if (filled > 0) out[o] = static_cast<uint8_t>(acc & 0xff);
}

void UnpackRow(const uint8_t* in, int channels, int bits, uint8_t* codes) {
  const uint32_t mask = (1u << bits) - 1;
  uint32_t acc = 0;
  int filled = 0;
  size_t i = 0;
  for (int c = 0; c < channels; ++c) {
    if (filled < bits) {
      acc |= static_cast<uint32_t>(in[i++]) << filled;
      filled += 8;
    }
    codes[c] = static_cast<uint8_t>(acc & mask);
    acc >>= bits;
    filled -= bits;
  }
}

void DequantizeRowPerChannel(const uint8_t* codes, const float* lo, const float* step,
                             const KvView& dst, int64_t t) {
  DispatchDType(dst.dtype, [&](auto e) {
    using E = decltype(e);
    ForRow(dst, t, [&](int c, int64_t j) {
      const float q = static_cast<float>(codes[c]) * step[c];
      E::Store(dst.data, j, lo[c] + q);
    });
    return 0;
  });
}

void DequantizeRowPerToken(const uint8_t* codes, int group_size, const float* lo, const float* step,
                           const KvView& dst, int64_t t) {
  DispatchDType(dst.dtype, [&](auto e) {
    using E = decltype(e);
    ForRow(dst, t, [&](int c, int64_t j) {
      const int g = c / group_size;
      const float q = static_cast<float>(codes[c]) * step[g];
      E::Store(dst.data, j, lo[g] + q);
    });
    return 0;
  });
}

void RawRowOut(const uint8_t* in, const KvView& dst, int64_t t) {
  DispatchDType(dst.dtype, [&](auto e) {
    using E = decltype(e);
    ForRow(dst, t,
           [&](int c, int64_t j) { E::Store(dst.data, j, HalfToFloat(ReadU16(in + 2 * c))); });
    return 0;
  });
}

constexpr KernelOps kScalarOps = {
    MinMaxPerChannel,
    MinMaxPerToken,
    MakeParams,
    ParamsValid,
    RawRowValid,
    LoadParams,
    ScaleTable,
    StepTable,
    QuantizeRowPerChannel,
    QuantizeRowPerToken,
    RawRow,
    PackRow,
    UnpackRow,
    DequantizeRowPerChannel,
    DequantizeRowPerToken,
    RawRowOut,
};

}  // namespace

const KernelOps& ScalarOps() { return kScalarOps; }

}  // namespace qkvshare::quant::internal

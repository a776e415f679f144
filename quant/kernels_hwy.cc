// Highway row primitives of quant/kernels_internal.h (KernelPath::kSimd): one
// source compiled for every target of the architecture (x86: SSE4, AVX2,
// AVX3...; aarch64: NEON, SVE...; EMU128 everywhere) and chosen at run time
// with HWY_DYNAMIC_DISPATCH.
//
// Bit-identical to kernels_scalar.cc on every target: the same IEEE
// operations in the same order (multiply then add, no FMA: -ffp-contract=off
// in BUILD), conversions from quant/fp16-inl.h (integer ops, never Highway's
// truncating f16/bf16 DemoteTo), row tails shorter than a vector through the
// shared element helpers of kernels_internal.h, and min/max whose only
// target-dependent choice (-0 vs +0) MakeParams erases.
//
// Packing is SWAR on 64-bit words: with the LSB-first layout 8 codes of width
// b are exactly b bytes, so each chunk of 8 code bytes folds into one word in
// three shift/mask steps (and unfolds the same way). Little-endian hosts only
// (x86-64, aarch64).

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "quant/kernels_hwy.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// Must come after foreach_target.h.
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "base/dtype.h"
#include "hwy/highway.h"
#include "quant/fp16-inl.h"
#include "quant/fp16.h"
#include "quant/kernels_internal.h"

HWY_BEFORE_NAMESPACE();
namespace qkvshare::quant {
namespace HWY_NAMESPACE {
namespace {

namespace hn = hwy::HWY_NAMESPACE;
using internal::Finite16;
using internal::LoadElem;
using internal::Quantize1;
using internal::StoreElem;

using DF = hn::ScalableTag<float>;
using DI = hn::RebindToSigned<DF>;
using D8 = hn::Rebind<uint8_t, DF>;

template <typename Fn>
HWY_INLINE auto ForDType(DType d, Fn&& fn) {
  switch (d) {
    case DType::kBF16:
      return fn(std::integral_constant<DType, DType::kBF16>{});
    case DType::kF16:
      return fn(std::integral_constant<DType, DType::kF16>{});
    default:
      return fn(std::integral_constant<DType, DType::kF32>{});
  }
}

// |x| <= 65504 lane-wise (false for NaN).
HWY_INLINE hn::Mask<DF> Finite16V(DF df, hn::Vec<DF> x) {
  return hn::Le(hn::Abs(x), hn::Set(df, kFp16Max));
}

// Codes of Lanes(df) elements: min(L, max(0, (x - lo) * scale)) + 0.5, truncated.
HWY_INLINE hn::Vec<D8> CodesV(DF df, hn::Vec<DF> x, hn::Vec<DF> lo, hn::Vec<DF> scale,
                              hn::Vec<DF> levels) {
  auto v = hn::Mul(hn::Sub(x, lo), scale);
  v = hn::Min(hn::Max(v, hn::Zero(df)), levels);
  v = hn::Add(v, hn::Set(df, 0.5f));
  return hn::DemoteTo(D8(), hn::ConvertTo(DI(), v));
}

// lo + code * step (multiply, then add).
HWY_INLINE hn::Vec<DF> ValuesV(DF df, const uint8_t* codes, hn::Vec<DF> lo, hn::Vec<DF> step) {
  const auto f = hn::ConvertTo(df, hn::PromoteTo(DI(), hn::LoadU(D8(), codes)));
  return hn::Add(lo, hn::Mul(f, step));
}

// ---- quantize ----------------------------------------------------------------

template <DType D>
bool MinMaxPerChannelT(const ConstKvView& src, int64_t t0, int nt, const uint8_t* bits, float* mn,
                       float* mx) {
  const DF df;
  const int n = static_cast<int>(hn::Lanes(df));
  const int hd = src.head_dim;
  auto ok = hn::FirstN(df, hn::Lanes(df));
  bool ok_tail = true;
  for (int h = 0; h < src.num_heads; ++h) {
    const int64_t base = h * src.head_stride + t0 * hd;
    int d0 = 0;
    for (; d0 + n <= hd; d0 += n) {
      auto lo = hn::Set(df, 2 * kFp16Max);
      auto hi = hn::Set(df, -2 * kFp16Max);
      for (int i = 0; i < nt; ++i) {
        const auto x = LoadAsF32<D>(df, src.data, base + static_cast<int64_t>(i) * hd + d0);
        ok = hn::And(ok, Finite16V(df, x));
        if (bits[i] <= 8) {
          lo = hn::Min(lo, x);
          hi = hn::Max(hi, x);
        }
      }
      hn::StoreU(lo, df, mn + h * hd + d0);
      hn::StoreU(hi, df, mx + h * hd + d0);
    }
    for (int d = d0; d < hd; ++d) {
      float lo = 2 * kFp16Max, hi = -2 * kFp16Max;
      for (int i = 0; i < nt; ++i) {
        const float x = LoadElem<D>(src.data, base + static_cast<int64_t>(i) * hd + d);
        ok_tail &= Finite16(x);
        if (bits[i] <= 8) {
          lo = x < lo ? x : lo;
          hi = x > hi ? x : hi;
        }
      }
      mn[h * hd + d] = lo;
      mx[h * hd + d] = hi;
    }
  }
  return ok_tail && hn::AllTrue(df, ok);
}

bool MinMaxPerChannel(const ConstKvView& src, int64_t t0, int nt, const uint8_t* bits, float* mn,
                      float* mx) {
  return ForDType(src.dtype, [&](auto d) {
    return MinMaxPerChannelT<decltype(d)::value>(src, t0, nt, bits, mn, mx);
  });
}

// Calls seg(c, idx, len) for the contiguous runs (within one head) of the
// channels [c0, c1) of token t: channel c lives at element idx of the view.
template <typename View, typename Seg>
HWY_INLINE void ForRuns(const View& v, int64_t t, int c0, int c1, Seg&& seg) {
  const int hd = v.head_dim;
  for (int c = c0; c < c1;) {
    const int h = c / hd;
    const int d = c - h * hd;
    const int len = hd - d < c1 - c ? hd - d : c1 - c;
    seg(c, h * v.head_stride + t * hd + d, len);
    c += len;
  }
}

template <DType D>
bool MinMaxPerTokenT(const ConstKvView& src, int64_t t, int group_size, float* mn, float* mx) {
  const DF df;
  const int n = static_cast<int>(hn::Lanes(df));
  const int channels = src.channels();
  auto ok = hn::FirstN(df, hn::Lanes(df));
  bool ok_tail = true;
  for (int c0 = 0, g = 0; c0 < channels; c0 += group_size, ++g) {
    const int c1 = c0 + group_size < channels ? c0 + group_size : channels;
    auto vlo = hn::Set(df, 2 * kFp16Max);
    auto vhi = hn::Set(df, -2 * kFp16Max);
    float lo = 2 * kFp16Max, hi = -2 * kFp16Max;
    ForRuns(src, t, c0, c1, [&](int, int64_t idx, int len) {
      int k = 0;
      for (; k + n <= len; k += n) {
        const auto x = LoadAsF32<D>(df, src.data, idx + k);
        ok = hn::And(ok, Finite16V(df, x));
        vlo = hn::Min(vlo, x);
        vhi = hn::Max(vhi, x);
      }
      for (; k < len; ++k) {
        const float x = LoadElem<D>(src.data, idx + k);
        ok_tail &= Finite16(x);
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
      }
    });
    const float vl = hn::GetLane(hn::MinOfLanes(df, vlo));
    const float vh = hn::GetLane(hn::MaxOfLanes(df, vhi));
    mn[g] = vl < lo ? vl : lo;
    mx[g] = vh > hi ? vh : hi;
  }
  return ok_tail && hn::AllTrue(df, ok);
}

bool MinMaxPerToken(const ConstKvView& src, int64_t t, int group_size, float* mn, float* mx) {
  return ForDType(src.dtype, [&](auto d) {
    return MinMaxPerTokenT<decltype(d)::value>(src, t, group_size, mn, mx);
  });
}

template <DType D>
void QuantizeRowPerChannelT(const ConstKvView& src, int64_t t, const float* lo, const float* scale,
                            int bits, uint8_t* codes) {
  const DF df;
  const int n = static_cast<int>(hn::Lanes(df));
  const float levels = static_cast<float>((1 << bits) - 1);
  const auto vlevels = hn::Set(df, levels);
  const int hd = src.head_dim;
  for (int h = 0; h < src.num_heads; ++h) {
    const int64_t base = h * src.head_stride + t * hd;
    const int c0 = h * hd;
    int d = 0;
    for (; d + n <= hd; d += n) {
      const auto x = LoadAsF32<D>(df, src.data, base + d);
      const auto q =
          CodesV(df, x, hn::LoadU(df, lo + c0 + d), hn::LoadU(df, scale + c0 + d), vlevels);
      hn::StoreU(q, D8(), codes + c0 + d);
    }
    for (; d < hd; ++d) {
      const int c = c0 + d;
      codes[c] = static_cast<uint8_t>(
          static_cast<int>(Quantize1(LoadElem<D>(src.data, base + d), lo[c], scale[c], levels)));
    }
  }
}

void QuantizeRowPerChannel(const ConstKvView& src, int64_t t, const float* lo, const float* scale,
                           int bits, uint8_t* codes) {
  ForDType(src.dtype, [&](auto d) {
    QuantizeRowPerChannelT<decltype(d)::value>(src, t, lo, scale, bits, codes);
    return 0;
  });
}

template <DType D>
void QuantizeRowPerTokenT(const ConstKvView& src, int64_t t, int group_size, const float* lo,
                          const float* scale, int bits, uint8_t* codes) {
  const DF df;
  const int n = static_cast<int>(hn::Lanes(df));
  const float levels = static_cast<float>((1 << bits) - 1);
  const auto vlevels = hn::Set(df, levels);
  const int channels = src.channels();
  for (int c0 = 0, g = 0; c0 < channels; c0 += group_size, ++g) {
    const int c1 = c0 + group_size < channels ? c0 + group_size : channels;
    const auto vlo = hn::Set(df, lo[g]);
    const auto vscale = hn::Set(df, scale[g]);
    ForRuns(src, t, c0, c1, [&](int c, int64_t idx, int len) {
      int k = 0;
      for (; k + n <= len; k += n) {
        hn::StoreU(CodesV(df, LoadAsF32<D>(df, src.data, idx + k), vlo, vscale, vlevels), D8(),
                   codes + c + k);
      }
      for (; k < len; ++k) {
        codes[c + k] = static_cast<uint8_t>(
            static_cast<int>(Quantize1(LoadElem<D>(src.data, idx + k), lo[g], scale[g], levels)));
      }
    });
  }
}

void QuantizeRowPerToken(const ConstKvView& src, int64_t t, int group_size, const float* lo,
                         const float* scale, int bits, uint8_t* codes) {
  ForDType(src.dtype, [&](auto d) {
    QuantizeRowPerTokenT<decltype(d)::value>(src, t, group_size, lo, scale, bits, codes);
    return 0;
  });
}

template <DType D>
bool RawRowT(const ConstKvView& src, int64_t t, uint8_t* out) {
  const DF df;
  const hn::Rebind<uint16_t, DF> d16;
  const int n = static_cast<int>(hn::Lanes(df));
  const int hd = src.head_dim;
  auto ok = hn::FirstN(df, hn::Lanes(df));
  bool ok_tail = true;
  for (int h = 0; h < src.num_heads; ++h) {
    const int64_t base = h * src.head_stride + t * hd;
    uint8_t* row = out + 2 * static_cast<size_t>(h) * hd;
    int d = 0;
    for (; d + n <= hd; d += n) {
      const auto x = LoadAsF32<D>(df, src.data, base + d);
      ok = hn::And(ok, Finite16V(df, x));
      // Little-endian host: a u16 lane store is the fp16 byte order.
      hn::StoreU(hn::DemoteTo(d16, F32ToHalfBits(df, x)), d16,
                 reinterpret_cast<uint16_t*>(row + 2 * d));
    }
    for (; d < hd; ++d) {
      const float x = LoadElem<D>(src.data, base + d);
      ok_tail &= Finite16(x);
      internal::WriteU16(row + 2 * d, FloatToHalf(x));
    }
  }
  return ok_tail && hn::AllTrue(df, ok);
}

bool RawRow(const ConstKvView& src, int64_t t, uint8_t* out) {
  return ForDType(src.dtype, [&](auto d) { return RawRowT<decltype(d)::value>(src, t, out); });
}

// Group parameters (kernels_internal.h make_params): lo rounded down, hi up,
// written as lo[n] then hi[n] (fp16, little-endian); lo and hi - lo as floats.
void MakeParams(const float* mn, const float* mx, int n, uint8_t* out, float* lo, float* range) {
  const DF df;
  const hn::Rebind<uint16_t, DF> d16;
  const int lanes = static_cast<int>(hn::Lanes(df));
  int i = 0;
  for (; i + lanes <= n; i += lanes) {
    // "+ 0.0f" turns -0 into +0, so every path stores the same bits.
    const auto l = F32ToHalfBitsDirected(df, hn::Add(hn::LoadU(df, mn + i), hn::Zero(df)), false);
    const auto h = F32ToHalfBitsDirected(df, hn::Add(hn::LoadU(df, mx + i), hn::Zero(df)), true);
    hn::StoreU(hn::DemoteTo(d16, l), d16, reinterpret_cast<uint16_t*>(out + 2 * i));
    hn::StoreU(hn::DemoteTo(d16, h), d16, reinterpret_cast<uint16_t*>(out + 2 * (n + i)));
    const auto lf = HalfBitsToF32(df, l);
    hn::StoreU(lf, df, lo + i);
    hn::StoreU(hn::Sub(HalfBitsToF32(df, h), lf), df, range + i);
  }
  for (; i < n; ++i) {
    const uint16_t l = FloatToHalf(mn[i] + 0.0f, Fp16Rounding::kDown);
    const uint16_t h = FloatToHalf(mx[i] + 0.0f, Fp16Rounding::kUp);
    internal::WriteU16(out + 2 * i, l);
    internal::WriteU16(out + 2 * (n + i), h);
    lo[i] = HalfToFloat(l);
    range[i] = HalfToFloat(h) - lo[i];
  }
}

// Decodes params written by MakeParams: lo[n], range[n].
void LoadParams(const uint8_t* in, int n, float* lo, float* range) {
  const DF df;
  const hn::Rebind<uint16_t, DF> d16;
  const int lanes = static_cast<int>(hn::Lanes(df));
  int i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto l = hn::LoadU(d16, reinterpret_cast<const uint16_t*>(in + 2 * i));
    const auto h = hn::LoadU(d16, reinterpret_cast<const uint16_t*>(in + 2 * (n + i)));
    const auto lf = HalfBitsToF32(df, hn::PromoteTo(DI(), l));
    hn::StoreU(lf, df, lo + i);
    hn::StoreU(hn::Sub(HalfBitsToF32(df, hn::PromoteTo(DI(), h)), lf), df, range + i);
  }
  for (; i < n; ++i) {
    lo[i] = HalfToFloat(internal::ReadU16(in + 2 * i));
    range[i] = HalfToFloat(internal::ReadU16(in + 2 * (n + i))) - lo[i];
  }
}

// ---- packing -----------------------------------------------------------------

// 8 codes of width B (one per byte of w, each < 2^B) -> 8B bits, LSB first.
template <int B>
HWY_INLINE uint64_t Fold8(uint64_t w) {
  w = (w & 0x00ff00ff00ff00ffull) | ((w & 0xff00ff00ff00ff00ull) >> (8 - B));
  w = (w & 0x0000ffff0000ffffull) | ((w & 0xffff0000ffff0000ull) >> (16 - 2 * B));
  return (w & 0x00000000ffffffffull) | ((w & 0xffffffff00000000ull) >> (32 - 4 * B));
}

// Inverse of Fold8: the low 8B bits of p -> 8 code bytes.
template <int B>
HWY_INLINE uint64_t Unfold8(uint64_t p) {
  constexpr uint64_t m4 = (uint64_t{1} << (4 * B)) - 1;
  constexpr uint64_t m2 = ((uint64_t{1} << (2 * B)) - 1) * 0x0000000100000001ull;
  constexpr uint64_t m1 = ((uint64_t{1} << B) - 1) * 0x0001000100010001ull;
  uint64_t w = (p & m4) | (((p >> (4 * B)) & m4) << 32);
  w = (w & m2) | (((w >> (2 * B)) & m2) << 16);
  return (w & m1) | (((w >> B) & m1) << 8);
}

// Calls fn(std::integral_constant<int, b>) for a coded width b in 2..7.
template <typename Fn>
HWY_INLINE void ForWidth(int bits, Fn&& fn) {
  switch (bits) {
    case 2:
      return fn(std::integral_constant<int, 2>{});
    case 3:
      return fn(std::integral_constant<int, 3>{});
    case 4:
      return fn(std::integral_constant<int, 4>{});
    case 5:
      return fn(std::integral_constant<int, 5>{});
    case 6:
      return fn(std::integral_constant<int, 6>{});
    default:
      return fn(std::integral_constant<int, 7>{});
  }
}

template <int B>
void PackRowT(const uint8_t* codes, int channels, uint8_t* out) {
  const size_t row = internal::RowBytes(channels, B);
  const int full = channels / 8;  // chunks of 8 codes -> B bytes
  int i = 0;
  // A full 8-byte store is fine while it stays inside the row: its zero high
  // bytes are overwritten by the next chunk.
  for (; i < full && static_cast<size_t>(i) * B + 8 <= row; ++i) {
    uint64_t w;
    std::memcpy(&w, codes + 8 * i, 8);
    const uint64_t p = Fold8<B>(w);
    std::memcpy(out + static_cast<size_t>(i) * B, &p, 8);
  }
  for (; i < full; ++i) {
    uint64_t w;
    std::memcpy(&w, codes + 8 * i, 8);
    const uint64_t p = Fold8<B>(w);
    std::memcpy(out + static_cast<size_t>(i) * B, &p, static_cast<size_t>(B));
  }
  const int rest = channels - 8 * full;
  if (rest > 0) {
    uint64_t w = 0;
    std::memcpy(&w, codes + 8 * full, static_cast<size_t>(rest));
    const uint64_t p = Fold8<B>(w);
    std::memcpy(out + static_cast<size_t>(full) * B, &p, static_cast<size_t>(rest * B + 7) / 8);
  }
}

template <int B>
void UnpackRowT(const uint8_t* in, int channels, uint8_t* codes) {
  const size_t row = internal::RowBytes(channels, B);
  const int full = channels / 8;
  int i = 0;
  for (; i < full && static_cast<size_t>(i) * B + 8 <= row; ++i) {
    uint64_t w;
    std::memcpy(&w, in + static_cast<size_t>(i) * B, 8);
    const uint64_t q = Unfold8<B>(w);  // uses only the low 8*B bits of w
    std::memcpy(codes + 8 * i, &q, 8);
  }
  for (; i < full; ++i) {
    uint64_t w = 0;
    std::memcpy(&w, in + static_cast<size_t>(i) * B, static_cast<size_t>(B));
    const uint64_t q = Unfold8<B>(w);
    std::memcpy(codes + 8 * i, &q, 8);
  }
  const int rest = channels - 8 * full;
  if (rest > 0) {
    uint64_t w = 0;
    std::memcpy(&w, in + static_cast<size_t>(full) * B, static_cast<size_t>(rest * B + 7) / 8);
    const uint64_t q = Unfold8<B>(w);
    std::memcpy(codes + 8 * full, &q, 8);  // codes has slack past `channels`
  }
}

void PackRow(const uint8_t* codes, int channels, int bits, uint8_t* out) {
  if (bits == 8) {
    std::memcpy(out, codes, static_cast<size_t>(channels));
    return;
  }
  ForWidth(bits, [&](auto b) { PackRowT<decltype(b)::value>(codes, channels, out); });
}

void UnpackRow(const uint8_t* in, int channels, int bits, uint8_t* codes) {
  if (bits == 8) {
    std::memcpy(codes, in, static_cast<size_t>(channels));
    return;
  }
  ForWidth(bits, [&](auto b) { UnpackRowT<decltype(b)::value>(in, channels, codes); });
}

// ---- dequantize --------------------------------------------------------------

template <DType D>
void DequantizeRowPerChannelT(const uint8_t* codes, const float* lo, const float* step,
                              const KvView& dst, int64_t t) {
  const DF df;
  const int n = static_cast<int>(hn::Lanes(df));
  const int hd = dst.head_dim;
  for (int h = 0; h < dst.num_heads; ++h) {
    const int64_t base = h * dst.head_stride + t * hd;
    const int c0 = h * hd;
    int d = 0;
    for (; d + n <= hd; d += n) {
      const int c = c0 + d;
      StoreFromF32<D>(df, ValuesV(df, codes + c, hn::LoadU(df, lo + c), hn::LoadU(df, step + c)),
                      dst.data, base + d);
    }
    for (; d < hd; ++d) {
      const int c = c0 + d;
      const float q = static_cast<float>(codes[c]) * step[c];
      StoreElem<D>(dst.data, base + d, lo[c] + q);
    }
  }
}

void DequantizeRowPerChannel(const uint8_t* codes, const float* lo, const float* step,
                             const KvView& dst, int64_t t) {
  ForDType(dst.dtype, [&](auto d) {
    DequantizeRowPerChannelT<decltype(d)::value>(codes, lo, step, dst, t);
    return 0;
  });
}

template <DType D>
void DequantizeRowPerTokenT(const uint8_t* codes, int group_size, const float* lo,
                            const float* step, const KvView& dst, int64_t t) {
  const DF df;
  const int n = static_cast<int>(hn::Lanes(df));
  const int channels = dst.channels();
  for (int c0 = 0, g = 0; c0 < channels; c0 += group_size, ++g) {
    const int c1 = c0 + group_size < channels ? c0 + group_size : channels;
    const auto vlo = hn::Set(df, lo[g]);
    const auto vstep = hn::Set(df, step[g]);
    ForRuns(dst, t, c0, c1, [&](int c, int64_t idx, int len) {
      int k = 0;
      for (; k + n <= len; k += n) {
        StoreFromF32<D>(df, ValuesV(df, codes + c + k, vlo, vstep), dst.data, idx + k);
      }
      for (; k < len; ++k) {
        const float q = static_cast<float>(codes[c + k]) * step[g];
        StoreElem<D>(dst.data, idx + k, lo[g] + q);
      }
    });
  }
}

void DequantizeRowPerToken(const uint8_t* codes, int group_size, const float* lo, const float* step,
                           const KvView& dst, int64_t t) {
  ForDType(dst.dtype, [&](auto d) {
    DequantizeRowPerTokenT<decltype(d)::value>(codes, group_size, lo, step, dst, t);
    return 0;
  });
}

template <DType D>
void RawRowOutT(const uint8_t* in, const KvView& dst, int64_t t) {
  const DF df;
  const hn::Rebind<uint16_t, DF> d16;
  const int n = static_cast<int>(hn::Lanes(df));
  const int hd = dst.head_dim;
  for (int h = 0; h < dst.num_heads; ++h) {
    const int64_t base = h * dst.head_stride + t * hd;
    const uint8_t* row = in + 2 * static_cast<size_t>(h) * hd;
    int d = 0;
    for (; d + n <= hd; d += n) {
      const auto bits16 = hn::LoadU(d16, reinterpret_cast<const uint16_t*>(row + 2 * d));
      StoreFromF32<D>(df, HalfBitsToF32(df, hn::PromoteTo(DI(), bits16)), dst.data, base + d);
    }
    for (; d < hd; ++d) {
      StoreElem<D>(dst.data, base + d, HalfToFloat(internal::ReadU16(row + 2 * d)));
    }
  }
}

void RawRowOut(const uint8_t* in, const KvView& dst, int64_t t) {
  ForDType(dst.dtype, [&](auto d) {
    RawRowOutT<decltype(d)::value>(in, dst, t);
    return 0;
  });
}

}  // namespace

// This target's ops: the row loops above; the scalar primitives for the
// validity checks and the scale/step tables (a division per group).
const internal::KernelOps* GetSimdOps() {
  static const internal::KernelOps ops = [] {
    internal::KernelOps o = internal::ScalarOps();
    o.min_max_per_channel = MinMaxPerChannel;
    o.min_max_per_token = MinMaxPerToken;
    o.make_params = MakeParams;
    o.load_params = LoadParams;
    o.quantize_row_per_channel = QuantizeRowPerChannel;
    o.quantize_row_per_token = QuantizeRowPerToken;
    o.raw_row = RawRow;
    o.pack_row = PackRow;
    o.unpack_row = UnpackRow;
    o.dequantize_row_per_channel = DequantizeRowPerChannel;
    o.dequantize_row_per_token = DequantizeRowPerToken;
    o.raw_row_out = RawRowOut;
    return o;
  }();
  return &ops;
}

}  // namespace HWY_NAMESPACE
}  // namespace qkvshare::quant
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qkvshare::quant {
HWY_EXPORT(GetSimdOps);

namespace internal {
const KernelOps& SimdOps() { return *HWY_DYNAMIC_DISPATCH(GetSimdOps)(); }
}  // namespace internal
}  // namespace qkvshare::quant
#endif  // HWY_ONCE

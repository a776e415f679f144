// Highway kernels of agents/kernels/matvec_quant.h: this file is compiled
// once per SIMD target (foreach_target.h) and dispatched at run time.
#include "agents/kernels/matvec_quant.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "agents/kernels/matvec_quant.cc"
#include "hwy/cache_control.h"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "quant/fp16.h"

// The q4 / q6 group kernels load each row's 32-bit words of codes as
// vector lanes (block_formats.h: little-endian words).
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "matvec_quant.cc assumes a little-endian host (the q4 / q6 groups' words)"
#endif

HWY_BEFORE_NAMESPACE();
namespace qkvshare::agents::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using weights::BlockQ4x8;
using weights::BlockQ6x8;
using weights::BlockQ8;
using weights::kBlockSize;
using weights::kQ4GroupRows;

// At most 16 fp32 lanes (so 32 is a multiple of the lane count everywhere).
using DF = hn::CappedTag<float, 16>;

// Blocks prefetched ahead of the one a row reads (~1 KiB for q8): one row at
// a time with this prefetch measured 2-3x faster on Zen 3 than 4 rows per
// pass sharing the activation loads (4 interleaved weight streams defeat the
// hardware prefetcher); the prefetch itself added ~15%.
constexpr int64_t kPrefetchBlocks = 32;
// q4 / q6 groups are 160 / 208 bytes per block column: ~1.3 / 1.7 KiB ahead.
constexpr int64_t kGroupPrefetchBlocks = 8;

// ------------------------------ q8: float widening
// x padded with zeros to whole blocks (the padding lanes of the last block of
// a row hold code 0).
const float* PaddedInput(const float* x, int64_t cols) {
  if (cols % kBlockSize == 0) return x;
  thread_local std::vector<float> padded;
  padded.assign(weights::BlocksPerRow(cols) * kBlockSize, 0.0f);
  std::memcpy(padded.data(), x, cols * sizeof(float));
  return padded.data();
}

// fp16 bits of a block scale -> float with the target's conversion (F16C
// vcvtph2ps, Arm fcvt; Highway's exact emulation elsewhere): the branches of
// scalar quant::HalfToFloat cost the q4 kernel ~45% of its time (two scales
// per 32 weights). Exact for finite values, as HalfToFloat; scales are finite.
HWY_INLINE float HalfToF32(uint16_t bits) {
  const hn::CappedTag<float, 1> d1;
  const hn::Rebind<hwy::float16_t, decltype(d1)> dh;
  hwy::float16_t h;
  std::memcpy(&h, &bits, sizeof h);
  return hn::GetLane(hn::PromoteTo(d1, hn::LoadU(dh, &h)));
}

void MatVecQ8Rows(const BlockQ8* w, int64_t cols, const float* x, float* y, int64_t row_begin,
                  int64_t row_end) {
  const float* xp = PaddedInput(x, cols);
  const int64_t blocks = weights::BlocksPerRow(cols);
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<int8_t, DF> d8;
  const size_t N = hn::Lanes(df);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const BlockQ8* row = w + r * blocks;
    auto acc = hn::Zero(df);
    for (int64_t b = 0; b < blocks; ++b) {
      hwy::Prefetch(row + b + kPrefetchBlocks);
      const float* xb = xp + b * kBlockSize;
      auto part = hn::Zero(df);
      HWY_UNROLL(8)
      for (size_t k = 0; k < static_cast<size_t>(kBlockSize); k += N) {
        const auto q = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, row[b].qs + k)));
        part = hn::MulAdd(q, hn::LoadU(df, xb + k), part);
      }
      acc = hn::MulAdd(part, hn::Set(df, HalfToF32(row[b].d)), acc);
    }
    y[r] = hn::GetLane(hn::SumOfLanes(df, acc));
  }
}

// ------------------------------ q4: integer dot products, 8 rows at once
// The activations of one call, quantized (QuantizeActivationsQ8) once and
// reused by every row. Per thread: callers split rows across threads.
// pairs[p] holds codes 2p and 2p + 1 as two int16 (little-endian) in one
// 32-bit word: broadcast, it is the activation operand of every row's
// pairwise multiply-add.
struct QuantizedInput {
  std::vector<int8_t> xq;
  std::vector<int32_t> pairs;
  std::vector<float> dx, sums;
};

const QuantizedInput& Quantized(const float* x, int64_t cols) {
  thread_local QuantizedInput in;
  const int64_t blocks = weights::BlocksPerRow(cols);
  in.xq.resize(blocks * kBlockSize);
  in.pairs.resize(blocks * kBlockSize / 2);
  in.dx.resize(blocks);
  in.sums.resize(blocks);
  QuantizeActivationsQ8(x, cols, in.xq.data(), in.dx.data(), in.sums.data());
  for (size_t p = 0; p < in.pairs.size(); ++p) {
    const uint32_t lo = static_cast<uint16_t>(int16_t{in.xq[2 * p]});
    const uint32_t hi = static_cast<uint16_t>(int16_t{in.xq[2 * p + 1]});
    in.pairs[p] = static_cast<int32_t>(lo | (hi << 16));
  }
  return in;
}

// Calls fn(r, value) for the rows r = r0 + i (i < lanes) of `v` that are in
// [row_begin, row_end): a group's rows outside a caller's range are computed
// (the whole group is one vector) but not stored.
template <class D, class Fn>
HWY_INLINE void ForRowsInRange(D d, hn::Vec<D> v, int64_t r0, int64_t row_begin, int64_t row_end,
                               const Fn& fn) {
  HWY_ALIGN float lanes[16];
  hn::Store(v, d, lanes);
  for (size_t i = 0; i < hn::Lanes(d); ++i) {
    const int64_t r = r0 + static_cast<int64_t>(i);
    if (r >= row_begin && r < row_end) fn(r, lanes[i]);
  }
}

// The fp16 scales (or minima) of rows v .. v + lanes of a group, as fp32.
template <class DF32>
HWY_INLINE hn::Vec<DF32> GroupHalves(DF32 df, const uint16_t* halves) {
  const hn::Rebind<hwy::float16_t, DF32> dh;
  return hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(halves)));
}

// Bits 4..5 of each 16-bit lane: the high pairs of q6 codes, at bit kShift
// of the lane (Q6x8HighShift within its half).
template <int kShift, class V>
HWY_INLINE V HighPairs(V h) {
  const auto mask = hn::Set(hn::DFromV<V>(), 0x30);
  if constexpr (kShift <= 4) {
    return hn::And(hn::ShiftLeft<4 - kShift>(h), mask);
  } else {
    return hn::And(hn::ShiftRight<kShift - 4>(h), mask);
  }
}

// The exact int32 dot products of block column `blk` of rows v .. v +
// lanes with the quantized activations (pairs xp of the block), one row per
// lane. Nibble extraction k: shift 0, 4, 8, 12 of the 16-bit lanes gives
// element pairs (0, 1), (4, 5), (2, 3), (6, 7) of chunk u: activation
// pairs 4u, 4u + 2, 4u + 1, 4u + 3 (block_formats.h BlockQ4x8).
template <class D32>
HWY_INLINE hn::Vec<D32> GroupDot(D32 d32, const BlockQ4x8& blk, size_t v, const int32_t* xp) {
  const hn::Repartition<int16_t, D32> d16;
  const hn::RebindToUnsigned<decltype(d16)> du16;
  const auto nibble = hn::Set(du16, 0x000F);
  auto sum0 = hn::Zero(d32), sum1 = hn::Zero(d32);
  auto x_pair = [&](size_t p) { return hn::BitCast(d16, hn::Set(d32, xp[p])); };
  HWY_UNROLL(4)
  for (size_t u = 0; u < 4; ++u) {
    const auto w = hn::LoadU(du16, reinterpret_cast<const uint16_t*>(blk.qs + 32 * u + 4 * v));
    auto mac = [&](auto codes, size_t p) {
      sum0 = hn::ReorderWidenMulAccumulate(d32, hn::BitCast(d16, codes), x_pair(p), sum0, sum1);
    };
    mac(hn::And(w, nibble), 4 * u);
    mac(hn::And(hn::ShiftRight<4>(w), nibble), 4 * u + 2);
    mac(hn::And(hn::ShiftRight<8>(w), nibble), 4 * u + 1);
    mac(hn::ShiftRight<12>(w), 4 * u + 3);
  }
  return hn::RearrangeToOddPlusEven(sum0, sum1);
}

// q6: the same with each code's high pair (qh word H of chunk pair u / 2)
// or-ed in as bits 4..5 (codes 0..63; the -32 is GroupOffset's).
template <int kU, class D16, class D32, class V32>
HWY_INLINE void Q6ChunkDot(D16 d16, D32 d32, const BlockQ6x8& blk, size_t v, const int32_t* xp,
                           V32& sum0, V32& sum1) {
  const hn::RebindToUnsigned<D16> du16;
  const auto nibble = hn::Set(du16, 0x000F);
  const auto w = hn::LoadU(du16, reinterpret_cast<const uint16_t*>(blk.ql + 32 * kU + 4 * v));
  const auto h = hn::LoadU(du16, reinterpret_cast<const uint16_t*>(blk.qh + 32 * (kU / 2) + 4 * v));
  constexpr int kHigh = 8 * (kU % 2);  // + nibble shift / 2
  auto mac = [&](auto codes, size_t p) {
    sum0 = hn::ReorderWidenMulAccumulate(d32, hn::BitCast(d16, codes),
                                         hn::BitCast(d16, hn::Set(d32, xp[p])), sum0, sum1);
  };
  mac(hn::Or(hn::And(w, nibble), HighPairs<kHigh + 0>(h)), 4 * kU);
  mac(hn::Or(hn::And(hn::ShiftRight<4>(w), nibble), HighPairs<kHigh + 2>(h)), 4 * kU + 2);
  mac(hn::Or(hn::And(hn::ShiftRight<8>(w), nibble), HighPairs<kHigh + 4>(h)), 4 * kU + 1);
  mac(hn::Or(hn::ShiftRight<12>(w), HighPairs<kHigh + 6>(h)), 4 * kU + 3);
}

template <class D32>
HWY_INLINE hn::Vec<D32> GroupDot(D32 d32, const BlockQ6x8& blk, size_t v, const int32_t* xp) {
  const hn::Repartition<int16_t, D32> d16;
  auto sum0 = hn::Zero(d32), sum1 = hn::Zero(d32);
  Q6ChunkDot<0>(d16, d32, blk, v, xp, sum0, sum1);
  Q6ChunkDot<1>(d16, d32, blk, v, xp, sum0, sum1);
  Q6ChunkDot<2>(d16, d32, blk, v, xp, sum0, sum1);
  Q6ChunkDot<3>(d16, d32, blk, v, xp, sum0, sum1);
  return hn::RearrangeToOddPlusEven(sum0, sum1);
}

// The value of code 0 of rows v .. v + lanes: q4 m, q6 -32 d.
template <class DF32>
HWY_INLINE hn::Vec<DF32> GroupOffset(DF32 df, const BlockQ4x8& blk, size_t v) {
  return GroupHalves(df, blk.m + v);
}
template <class DF32>
HWY_INLINE hn::Vec<DF32> GroupOffset(DF32 df, const BlockQ6x8& blk, size_t v) {
  return hn::Mul(GroupHalves(df, blk.d + v), hn::Set(df, -32.0f));
}

// The SCALAR target's path reads a group's row back as its block
// (weights::GetGroupRow): code i, and code 0's value (q4 m, q6 -32 d).
HWY_INLINE int BlockCode(const weights::BlockQ4& b, int i) { return weights::Q4Code(b, i); }
HWY_INLINE int BlockCode(const weights::BlockQ6& b, int i) { return weights::Q6Code(b, i); }
HWY_INLINE float BlockOffset(const weights::BlockQ4& b) { return HalfToF32(b.m); }
HWY_INLINE float BlockOffset(const weights::BlockQ6& b) { return -32.0f * HalfToF32(b.d); }

// y[r] for the rows of groups of 8 (q4, q6): per block column, the exact
// integer dot products of the codes with the int8 activations for 4 or 8
// rows at once, scaled by d * dx, plus the block's offset (code 0's
// value) times its fp32 sum of x.
template <class Group>
void MatVecGroupRows(const Group* w, int64_t cols, const float* x, float* y, int64_t row_begin,
                     int64_t row_end) {
  if (row_begin >= row_end) return;
  const QuantizedInput& in = Quantized(x, cols);
  const int64_t blocks = weights::BlocksPerRow(cols);
#if HWY_TARGET == HWY_SCALAR
  // One lane: no pairs of int16 lanes. Row by row, the same terms.
  for (int64_t r = row_begin; r < row_end; ++r) {
    const Group* group = w + r / kQ4GroupRows * blocks;
    const int j = static_cast<int>(r % kQ4GroupRows);
    float acc = 0.0f, offset = 0.0f;
    for (int64_t b = 0; b < blocks; ++b) {
      const auto blk = weights::GetGroupRow(group[b], j);
      int32_t dot = 0;
      for (int i = 0; i < kBlockSize; ++i) dot += BlockCode(blk, i) * in.xq[b * kBlockSize + i];
      acc += static_cast<float>(dot) * (HalfToF32(blk.d) * in.dx[b]);
      offset += BlockOffset(blk) * in.sums[b];
    }
    y[r] = acc + offset;
  }
#else
  // Lane j of a 32-bit vector is row v + j of the group (8 lanes on 256-bit
  // and wider targets, capped there; 4 on 128-bit ones: two passes v = 0, 4
  // over the group, its blocks still in cache). No horizontal sums.
  const hn::CappedTag<int32_t, 8> d32;
  const hn::Rebind<float, decltype(d32)> df;
  const size_t lanes = hn::Lanes(d32);
  for (int64_t g = row_begin / kQ4GroupRows; g * kQ4GroupRows < row_end; ++g) {
    const Group* group = w + g * blocks;
    for (size_t v = 0; v < static_cast<size_t>(kQ4GroupRows); v += lanes) {
      auto block = [&](int64_t b, hn::Vec<decltype(df)>& acc, hn::Vec<decltype(df)>& offset) {
        const Group& blk = group[b];
        const auto dot = hn::ConvertTo(df, GroupDot(d32, blk, v, &in.pairs[b * kBlockSize / 2]));
        const auto scale = hn::Mul(GroupHalves(df, blk.d + v), hn::Set(df, in.dx[b]));
        acc = hn::MulAdd(dot, scale, acc);
        offset = hn::MulAdd(GroupOffset(df, blk, v), hn::Set(df, in.sums[b]), offset);
      };
      // Two independent chains (even / odd blocks).
      auto acc0 = hn::Zero(df), acc1 = hn::Zero(df);
      auto off0 = hn::Zero(df), off1 = hn::Zero(df);
      int64_t b = 0;
      for (; b + 2 <= blocks; b += 2) {
        const char* ahead = reinterpret_cast<const char*>(group + b + kGroupPrefetchBlocks);
        for (size_t line = 0; line < 2 * sizeof(Group); line += 64) hwy::Prefetch(ahead + line);
        block(b, acc0, off0);
        block(b + 1, acc1, off1);
      }
      if (b < blocks) block(b, acc0, off0);
      const auto result = hn::Add(hn::Add(acc0, acc1), hn::Add(off0, off1));
      const int64_t r0 = g * kQ4GroupRows + static_cast<int64_t>(v);
      if (r0 >= row_begin && r0 + static_cast<int64_t>(lanes) <= row_end) {
        hn::StoreU(result, df, y + r0);
      } else {
        ForRowsInRange(df, result, r0, row_begin, row_end,
                       [&](int64_t r, float value) { y[r] = value; });
      }
    }
  }
#endif
}

void MatVecQ4Rows(const BlockQ4x8* w, int64_t cols, const float* x, float* y, int64_t row_begin,
                  int64_t row_end) {
  MatVecGroupRows(w, cols, x, y, row_begin, row_end);
}

void MatVecQ6Rows(const BlockQ6x8* w, int64_t cols, const float* x, float* y, int64_t row_begin,
                  int64_t row_end) {
  MatVecGroupRows(w, cols, x, y, row_begin, row_end);
}

// Dequantizes one block into 32 floats: d * q (q8) or d * q + m (q4),
// rounded as the scalar reference (no fused multiply-add).
HWY_INLINE void DequantizeBlock(const BlockQ8& blk, float* out) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<int8_t, DF> d8;
  const auto d = hn::Set(df, quant::HalfToFloat(blk.d));
  for (size_t k = 0; k < static_cast<size_t>(kBlockSize); k += hn::Lanes(df)) {
    const auto q = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, blk.qs + k)));
    hn::StoreU(hn::Mul(d, q), df, out + k);
  }
}

template <class Block>
void DequantizeRowsT(const Block* w, int64_t cols, int64_t row_begin, int64_t row_end, float* out) {
  const int64_t blocks = weights::BlocksPerRow(cols);
  const int64_t full = cols / kBlockSize;
  HWY_ALIGN float tail[kBlockSize];
  for (int64_t r = row_begin; r < row_end; ++r) {
    const Block* row = w + r * blocks;
    float* o = out + (r - row_begin) * cols;
    for (int64_t b = 0; b < full; ++b) DequantizeBlock(row[b], o + b * kBlockSize);
    if (full < blocks) {
      DequantizeBlock(row[full], tail);
      std::memcpy(o + full * kBlockSize, tail, (cols - full * kBlockSize) * sizeof(float));
    }
  }
}

void DequantizeQ8Rows(const BlockQ8* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  DequantizeRowsT(w, cols, row_begin, row_end, out);
}

// Stores the element vectors of chunk u of a group block (element(k): 8u +
// k of rows v .. v + lanes, one row per lane) into tile[j * 32 + 8u + k] =
// row j's. On x86's 8-lane targets each 8 x 8 square is transposed in
// registers (3 rounds of interleaves) into 8 row pieces; elsewhere the
// lanes are stored and transposed through memory.
template <class DF, class Element>
HWY_INLINE void StoreChunkRows(DF df, size_t v, int u, const Element& element,
                               float* HWY_RESTRICT tile) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  // 8 lanes (capped on AVX3 too), so v == 0.
  (void)v;
  const hn::Repartition<double, DF> dd;
  auto pair64 = [&](auto a, auto b, bool upper) {
    const auto a64 = hn::BitCast(dd, a), b64 = hn::BitCast(dd, b);
    return hn::BitCast(
        df, upper ? hn::InterleaveUpper(dd, a64, b64) : hn::InterleaveLower(dd, a64, b64));
  };
  const auto e0 = element(0), e1 = element(1), e2 = element(2), e3 = element(3);
  const auto e4 = element(4), e5 = element(5), e6 = element(6), e7 = element(7);
  // [W(0,k) W(0,k+1) W(1,k) W(1,k+1) | rows 4, 5] and [rows 2, 3 | 6, 7].
  const auto t01l = hn::InterleaveLower(df, e0, e1), t01u = hn::InterleaveUpper(df, e0, e1);
  const auto t23l = hn::InterleaveLower(df, e2, e3), t23u = hn::InterleaveUpper(df, e2, e3);
  const auto t45l = hn::InterleaveLower(df, e4, e5), t45u = hn::InterleaveUpper(df, e4, e5);
  const auto t67l = hn::InterleaveLower(df, e6, e7), t67u = hn::InterleaveUpper(df, e6, e7);
  // [W(j, 0..3) | W(j + 4, 0..3)] for j = 0..3, and elements 4..7.
  const auto lo0 = pair64(t01l, t23l, false), lo1 = pair64(t01l, t23l, true);
  const auto lo2 = pair64(t01u, t23u, false), lo3 = pair64(t01u, t23u, true);
  const auto hi0 = pair64(t45l, t67l, false), hi1 = pair64(t45l, t67l, true);
  const auto hi2 = pair64(t45u, t67u, false), hi3 = pair64(t45u, t67u, true);
  float* o = tile + 8 * u;
  hn::StoreU(hn::ConcatLowerLower(df, hi0, lo0), df, o + 0 * kBlockSize);
  hn::StoreU(hn::ConcatLowerLower(df, hi1, lo1), df, o + 1 * kBlockSize);
  hn::StoreU(hn::ConcatLowerLower(df, hi2, lo2), df, o + 2 * kBlockSize);
  hn::StoreU(hn::ConcatLowerLower(df, hi3, lo3), df, o + 3 * kBlockSize);
  hn::StoreU(hn::ConcatUpperUpper(df, hi0, lo0), df, o + 4 * kBlockSize);
  hn::StoreU(hn::ConcatUpperUpper(df, hi1, lo1), df, o + 5 * kBlockSize);
  hn::StoreU(hn::ConcatUpperUpper(df, hi2, lo2), df, o + 6 * kBlockSize);
  hn::StoreU(hn::ConcatUpperUpper(df, hi3, lo3), df, o + 7 * kBlockSize);
#else
  HWY_ALIGN float e[8][8];
  for (int k = 0; k < 8; ++k) hn::Store(element(k), df, e[k]);
  for (size_t j = 0; j < hn::Lanes(df); ++j) {
    for (int k = 0; k < 8; ++k) tile[(v + j) * kBlockSize + 8 * u + k] = e[k][j];
  }
#endif
}

// Group block `blk` dequantized into tile[j * 32 + k] = W[row j of the
// group, element k] (fp32, rounded as the scalar reference: q4 d * q + m,
// q6 d * (q - 32), no fused multiply-add). Element 8u + k of 4 or 8 rows
// comes out of the rows' 32-bit words with one shift and mask (q6: two).
template <class DU>
HWY_INLINE hn::Vec<DU> Nibbles(DU du, hn::Vec<DU> words, int k) {
  return hn::And(hn::ShiftRightSame(words, weights::Q4x8Shift(k)), hn::Set(du, 0x0Fu));
}

HWY_INLINE void DequantizeGroupBlock(const BlockQ4x8& blk, float* HWY_RESTRICT tile) {
  const hn::CappedTag<uint32_t, 8> du;
  const hn::Rebind<int32_t, decltype(du)> di;
  const hn::Rebind<float, decltype(du)> df;
  for (size_t v = 0; v < static_cast<size_t>(kQ4GroupRows); v += hn::Lanes(df)) {
    const auto d = GroupHalves(df, blk.d + v);
    const auto m = GroupHalves(df, blk.m + v);
    for (int u = 0; u < 4; ++u) {
      const auto words = hn::LoadU(du, reinterpret_cast<const uint32_t*>(blk.qs + 32 * u + 4 * v));
      StoreChunkRows(
          df, v, u,
          [&](int k) {
            const auto q = hn::ConvertTo(df, hn::BitCast(di, Nibbles(du, words, k)));
            return hn::Add(hn::Mul(d, q), m);
          },
          tile);
    }
  }
}

HWY_INLINE void DequantizeGroupBlock(const BlockQ6x8& blk, float* HWY_RESTRICT tile) {
  const hn::CappedTag<uint32_t, 8> du;
  const hn::Rebind<int32_t, decltype(du)> di;
  const hn::Rebind<float, decltype(du)> df;
  const auto offset = hn::Set(df, 32.0f);
  const auto pair = hn::Set(du, 3u);
  for (size_t v = 0; v < static_cast<size_t>(kQ4GroupRows); v += hn::Lanes(df)) {
    const auto d = GroupHalves(df, blk.d + v);
    for (int u = 0; u < 4; ++u) {
      const auto words = hn::LoadU(du, reinterpret_cast<const uint32_t*>(blk.ql + 32 * u + 4 * v));
      const auto high =
          hn::LoadU(du, reinterpret_cast<const uint32_t*>(blk.qh + 32 * (u / 2) + 4 * v));
      StoreChunkRows(
          df, v, u,
          [&](int k) {
            const auto h = hn::And(hn::ShiftRightSame(high, weights::Q6x8HighShift(u, k)), pair);
            const auto q = hn::Or(Nibbles(du, words, k), hn::ShiftLeft<4>(h));
            // q - 32 is exact: one rounding, the multiply.
            return hn::Mul(d, hn::Sub(hn::ConvertTo(df, hn::BitCast(di, q)), offset));
          },
          tile);
    }
  }
}

// A group block at a time into an L1 tile (8 rows x 32), its rows in the
// range copied out: the output rows are written sequentially, as prefill's
// row-major tiles want them.
template <class Group>
void DequantizeGroupRows(const Group* w, int64_t cols, int64_t row_begin, int64_t row_end,
                         float* out) {
  const int64_t blocks = weights::BlocksPerRow(cols);
  HWY_ALIGN float tile[kQ4GroupRows * kBlockSize];
  for (int64_t g = row_begin / kQ4GroupRows; g * kQ4GroupRows < row_end; ++g) {
    const int64_t j0 = std::max<int64_t>(0, row_begin - g * kQ4GroupRows);
    const int64_t j1 = std::min<int64_t>(kQ4GroupRows, row_end - g * kQ4GroupRows);
    for (int64_t b = 0; b < blocks; ++b) {
      const Group& blk = w[g * blocks + b];
      const char* ahead = reinterpret_cast<const char*>(&blk + kGroupPrefetchBlocks);
      for (size_t line = 0; line < sizeof(Group); line += 64) hwy::Prefetch(ahead + line);
      DequantizeGroupBlock(blk, tile);
      const int64_t n = std::min<int64_t>(kBlockSize, cols - b * kBlockSize);
      for (int64_t j = j0; j < j1; ++j) {
        std::memcpy(out + (g * kQ4GroupRows + j - row_begin) * cols + b * kBlockSize,
                    tile + j * kBlockSize, n * sizeof(float));
      }
    }
  }
}

void DequantizeQ4Rows(const BlockQ4x8* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  DequantizeGroupRows(w, cols, row_begin, row_end, out);
}

void DequantizeQ6Rows(const BlockQ6x8* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  DequantizeGroupRows(w, cols, row_begin, row_end, out);
}

}  // namespace HWY_NAMESPACE
}  // namespace qkvshare::agents::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qkvshare::agents::kernels {

void QuantizeActivationsQ8(const float* x, int64_t cols, int8_t* xq, float* dx, float* sums) {
  const int64_t blocks = weights::BlocksPerRow(cols);
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * weights::kBlockSize;
    const int64_t n = std::min<int64_t>(weights::kBlockSize, cols - begin);
    float amax = 0.0f, sum = 0.0f;
    for (int64_t k = 0; k < n; ++k) {
      amax = std::max(amax, std::fabs(x[begin + k]));
      sum += x[begin + k];
    }
    const float d = amax / 127.0f;
    const float id = d > 0.0f ? 127.0f / amax : 0.0f;
    for (int64_t k = 0; k < weights::kBlockSize; ++k) {
      xq[begin + k] = k < n ? static_cast<int8_t>(std::nearbyint(x[begin + k] * id)) : 0;
    }
    dx[b] = d;
    sums[b] = sum;
  }
}

HWY_EXPORT(MatVecQ8Rows);
HWY_EXPORT(MatVecQ4Rows);
HWY_EXPORT(DequantizeQ8Rows);
HWY_EXPORT(DequantizeQ4Rows);
HWY_EXPORT(MatVecQ6Rows);
HWY_EXPORT(DequantizeQ6Rows);

void MatVecQ8Rows(const weights::BlockQ8* w, int64_t cols, const float* x, float* y,
                  int64_t row_begin, int64_t row_end) {
  HWY_DYNAMIC_DISPATCH(MatVecQ8Rows)(w, cols, x, y, row_begin, row_end);
}

void MatVecQ4Rows(const weights::BlockQ4x8* w, int64_t cols, const float* x, float* y,
                  int64_t row_begin, int64_t row_end) {
  HWY_DYNAMIC_DISPATCH(MatVecQ4Rows)(w, cols, x, y, row_begin, row_end);
}

void DequantizeQ8Rows(const weights::BlockQ8* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  HWY_DYNAMIC_DISPATCH(DequantizeQ8Rows)(w, cols, row_begin, row_end, out);
}

void DequantizeQ4Rows(const weights::BlockQ4x8* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  HWY_DYNAMIC_DISPATCH(DequantizeQ4Rows)(w, cols, row_begin, row_end, out);
}

void MatVecQ6Rows(const weights::BlockQ6x8* w, int64_t cols, const float* x, float* y,
                  int64_t row_begin, int64_t row_end) {
  HWY_DYNAMIC_DISPATCH(MatVecQ6Rows)(w, cols, x, y, row_begin, row_end);
}

void DequantizeQ6Rows(const weights::BlockQ6x8* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  HWY_DYNAMIC_DISPATCH(DequantizeQ6Rows)(w, cols, row_begin, row_end, out);
}

}  // namespace qkvshare::agents::kernels
#endif  // HWY_ONCE

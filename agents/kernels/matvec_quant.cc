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

// q6 reads the 32-bit words of its blocks' high pairs with memcpy.
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "matvec_quant.cc assumes a little-endian host (the q6 blocks' words)"
#endif

HWY_BEFORE_NAMESPACE();
namespace qkvshare::agents::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using weights::BlockQ4;
using weights::BlockQ4x8;
using weights::BlockQ6;
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
// q4 groups are 160 bytes per block column: ~1.3 KiB ahead.
constexpr int64_t kQ4PrefetchBlocks = 8;

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

// ------------------------------ q6: float widening
// In step k (N fp32 lanes, k = 0, N, ... < 16) lane i assembles the codes of
// elements e = k + i (low nibble of ql[e]) and e + 16 (its high nibble):
// the high pairs of both are at bits 2 * (e / 2) and 2 * (e / 2) + 16 of
// qh's 32-bit word W[e % 2] (block_formats.h), so one variable shift of the
// lane's word brings both down. The codes q (0..63) are multiplied as they
// are and the offset applied once per block: sum_k (q_k - 32) x_k =
// sum_k q_k x_k - 32 * sum_k x_k, with the blocks' sums of x computed once
// per call (saves a subtraction per vector: measured, docs/performance.md).

// Lanes i & ~1: the shifts of step 0, hoisted out of the loops.
template <class DU>
HWY_INLINE hn::Vec<DU> Q6Shifts(DU du) {
  return hn::And(hn::Iota(du, 0), hn::Set(du, ~1u));
}

// Calls fn(half, codes) for half = 0 (elements [k, k + N)) and 1 (elements
// [k + 16, k + 16 + N)) of blk, the codes q as exact floats. (A callback,
// not a returned pair: SVE vectors are sizeless.)
template <class Fn>
HWY_INLINE void ForQ6Codes(const BlockQ6& blk, size_t k, hn::Vec<hn::RebindToUnsigned<DF>> shifts0,
                           const Fn& fn) {
  const DF df;
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint8_t, DF> du8;
  const auto nibble = hn::Set(du, 0x0Fu);
  const auto pair = hn::Set(du, 0x30u);
  // (The words are little-endian, as the host: see the check at the top.)
#if HWY_TARGET == HWY_SCALAR
  // One lane: element k's word.
  uint32_t word;
  std::memcpy(&word, blk.qh + 4 * (k % 2), sizeof word);
  const auto words = hn::Set(du, word);
#else
  // N is even and so is k: lane i's word is W[i % 2], i.e. qh read as one
  // 64-bit value and broadcast.
  const hn::Repartition<uint64_t, decltype(du)> du64;
  uint64_t qh64;
  std::memcpy(&qh64, blk.qh, sizeof qh64);
  const auto words = hn::BitCast(du, hn::Set(du64, qh64));
#endif
  // Lane i: shift 2 * ((k + i) / 2) = k + (i & ~1) (k even but on SCALAR,
  // where i = 0 and the word is already element k's).
  const auto t =
      hn::Shr(words, hn::Add(shifts0, hn::Set(du, static_cast<uint32_t>(k & ~size_t{1}))));
  const auto l = hn::PromoteTo(du, hn::LoadU(du8, blk.ql + k));
  auto as_float = [&](auto code) { return hn::ConvertTo(df, hn::BitCast(di, code)); };
  fn(0, as_float(hn::Or(hn::And(l, nibble), hn::And(hn::ShiftLeft<4>(t), pair))));
  fn(1, as_float(hn::Or(hn::ShiftRight<4>(l), hn::And(hn::ShiftRight<12>(t), pair))));
}

// The fp32 sums of x's blocks of 32 (x padded to whole blocks), per thread.
const float* BlockSums(const float* xp, int64_t blocks) {
  thread_local std::vector<float> sums;
  sums.resize(blocks);
  for (int64_t b = 0; b < blocks; ++b) {
    float s = 0.0f;
    for (int64_t k = 0; k < kBlockSize; ++k) s += xp[b * kBlockSize + k];
    sums[b] = s;
  }
  return sums.data();
}

void MatVecQ6Rows(const BlockQ6* w, int64_t cols, const float* x, float* y, int64_t row_begin,
                  int64_t row_end) {
  const float* xp = PaddedInput(x, cols);
  const int64_t blocks = weights::BlocksPerRow(cols);
  const float* sums = BlockSums(xp, blocks);
  const DF df;
  const hn::CappedTag<float, 1> d1;
  const size_t N = hn::Lanes(df);
  const auto shifts0 = Q6Shifts(hn::RebindToUnsigned<DF>());
  constexpr size_t kHalf = kBlockSize / 2;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const BlockQ6* row = w + r * blocks;
    auto acc = hn::Zero(df);
    auto offset = hn::Zero(d1);  // sum_b d_b * sum of block b's x
    for (int64_t b = 0; b < blocks; ++b) {
      hwy::Prefetch(row + b + kPrefetchBlocks);
      const float* xb = xp + b * kBlockSize;
      auto part = hn::Zero(df);
      HWY_UNROLL(16)
      for (size_t k = 0; k < kHalf; k += N) {
        ForQ6Codes(row[b], k, shifts0, [&](size_t half, auto codes) {
          part = hn::MulAdd(codes, hn::LoadU(df, xb + half * kHalf + k), part);
        });
      }
      const float d = HalfToF32(row[b].d);
      acc = hn::MulAdd(part, hn::Set(df, d), acc);
      offset = hn::MulAdd(hn::Set(d1, d), hn::Set(d1, sums[b]), offset);
    }
    y[r] = hn::GetLane(hn::SumOfLanes(df, acc)) - 32.0f * hn::GetLane(offset);
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

void MatVecQ4Rows(const BlockQ4x8* w, int64_t cols, const float* x, float* y, int64_t row_begin,
                  int64_t row_end) {
  if (row_begin >= row_end) return;
  const QuantizedInput& in = Quantized(x, cols);
  const int64_t blocks = weights::BlocksPerRow(cols);
  const int64_t g_begin = row_begin / kQ4GroupRows;
  const int64_t g_end = (row_end + kQ4GroupRows - 1) / kQ4GroupRows;
#if HWY_TARGET == HWY_SCALAR
  // One lane: no pairs of int16 lanes. Row by row, the same terms.
  for (int64_t r = row_begin; r < row_end; ++r) {
    const BlockQ4x8* group = w + r / kQ4GroupRows * blocks;
    const int j = static_cast<int>(r % kQ4GroupRows);
    float acc = 0.0f, min_term = 0.0f;
    for (int64_t b = 0; b < blocks; ++b) {
      const BlockQ4x8& blk = group[b];
      int32_t dot = 0;
      for (int i = 0; i < kBlockSize; ++i) {
        const int u = i / 8, shift = weights::Q4x8Shift(i % 8);
        uint32_t word;
        std::memcpy(&word, blk.qs + 32 * u + 4 * j, sizeof word);
        dot += static_cast<int32_t>((word >> shift) & 0x0F) * in.xq[b * kBlockSize + i];
      }
      acc += static_cast<float>(dot) * (HalfToF32(blk.d[j]) * in.dx[b]);
      min_term += HalfToF32(blk.m[j]) * in.sums[b];
    }
    y[r] = acc + min_term;
  }
#else
  // Lane j of a 32-bit vector is row v + j of the group (8 lanes on 256-bit
  // and wider targets, capped there; 4 on 128-bit ones: two passes v = 0, 4
  // over the group, its blocks still in cache). Its two 16-bit lanes hold
  // one element pair of that row (block_formats.h BlockQ4x8), multiplied
  // with the broadcast activation pair and summed pairwise into int32
  // (ReorderWidenMulAccumulate: pmaddwd / smlal ...): the block's exact
  // integer dot product per row, then scaled by d * dx, plus m * sum(x).
  const hn::CappedTag<int16_t, 16> d16;
  const hn::RebindToUnsigned<decltype(d16)> du16;
  const hn::Repartition<int32_t, decltype(d16)> d32;
  const hn::Rebind<float, decltype(d32)> df;
  const size_t lanes = hn::Lanes(d32);
  const auto nibble = hn::Set(du16, 0x000F);
  for (int64_t g = g_begin; g < g_end; ++g) {
    const BlockQ4x8* group = w + g * blocks;
    for (size_t v = 0; v < static_cast<size_t>(kQ4GroupRows); v += lanes) {
      // d * dx * dot + m * sum(x) of block b into acc / min_term.
      auto block = [&](int64_t b, hn::Vec<decltype(df)>& acc, hn::Vec<decltype(df)>& min_term) {
        const BlockQ4x8& blk = group[b];
        const int32_t* xp = in.pairs.data() + b * (kBlockSize / 2);
        auto sum0 = hn::Zero(d32), sum1 = hn::Zero(d32);
        auto x_pair = [&](size_t p) { return hn::BitCast(d16, hn::Set(d32, xp[p])); };
        HWY_UNROLL(4)
        for (size_t u = 0; u < 4; ++u) {
          const auto words =
              hn::LoadU(du16, reinterpret_cast<const uint16_t*>(blk.qs + 32 * u + 4 * v));
          // Element pairs (8u, 8u + 1), (8u + 4, + 5), (8u + 2, + 3), (8u + 6, + 7):
          // activation pairs 4u, 4u + 2, 4u + 1, 4u + 3.
          sum0 = hn::ReorderWidenMulAccumulate(d32, hn::BitCast(d16, hn::And(words, nibble)),
                                               x_pair(4 * u), sum0, sum1);
          sum0 = hn::ReorderWidenMulAccumulate(
              d32, hn::BitCast(d16, hn::And(hn::ShiftRight<4>(words), nibble)), x_pair(4 * u + 2),
              sum0, sum1);
          sum0 = hn::ReorderWidenMulAccumulate(
              d32, hn::BitCast(d16, hn::And(hn::ShiftRight<8>(words), nibble)), x_pair(4 * u + 1),
              sum0, sum1);
          sum0 = hn::ReorderWidenMulAccumulate(d32, hn::BitCast(d16, hn::ShiftRight<12>(words)),
                                               x_pair(4 * u + 3), sum0, sum1);
        }
        const auto dot = hn::ConvertTo(df, hn::RearrangeToOddPlusEven(sum0, sum1));
        const auto scale = hn::Mul(GroupHalves(df, blk.d + v), hn::Set(df, in.dx[b]));
        acc = hn::MulAdd(dot, scale, acc);
        min_term = hn::MulAdd(GroupHalves(df, blk.m + v), hn::Set(df, in.sums[b]), min_term);
      };
      // Two independent chains (even / odd blocks).
      auto acc0 = hn::Zero(df), acc1 = hn::Zero(df);
      auto min0 = hn::Zero(df), min1 = hn::Zero(df);
      int64_t b = 0;
      for (; b + 2 <= blocks; b += 2) {
        const char* ahead = reinterpret_cast<const char*>(group + b + kQ4PrefetchBlocks);
        for (size_t line = 0; line < 2 * sizeof(BlockQ4x8); line += 64) {
          hwy::Prefetch(ahead + line);
        }
        block(b, acc0, min0);
        block(b + 1, acc1, min1);
      }
      if (b < blocks) block(b, acc0, min0);
      const auto result = hn::Add(hn::Add(acc0, acc1), hn::Add(min0, min1));
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

HWY_INLINE void DequantizeBlock(const BlockQ4& blk, float* out) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<uint8_t, DF> du8;
  constexpr size_t kHalf = kBlockSize / 2;
  const auto d = hn::Set(df, quant::HalfToFloat(blk.d));
  const auto m = hn::Set(df, quant::HalfToFloat(blk.m));
  const auto nibble = hn::Set(di, 0x0F);
  for (size_t k = 0; k < kHalf; k += hn::Lanes(df)) {
    const auto bytes = hn::PromoteTo(di, hn::LoadU(du8, blk.qs + k));
    const auto lo = hn::ConvertTo(df, hn::And(bytes, nibble));
    const auto hi = hn::ConvertTo(df, hn::ShiftRight<4>(bytes));
    hn::StoreU(hn::Add(hn::Mul(d, lo), m), df, out + k);
    hn::StoreU(hn::Add(hn::Mul(d, hi), m), df, out + kHalf + k);
  }
}

// d * (q - 32), rounded as the scalar reference (q - 32 is exact: one
// rounding, the multiply).
HWY_INLINE void DequantizeBlock(const BlockQ6& blk, float* out) {
  const DF df;
  constexpr size_t kHalf = kBlockSize / 2;
  const auto d = hn::Set(df, quant::HalfToFloat(blk.d));
  const auto offset = hn::Set(df, 32.0f);
  const auto shifts0 = Q6Shifts(hn::RebindToUnsigned<DF>());
  for (size_t k = 0; k < kHalf; k += hn::Lanes(df)) {
    ForQ6Codes(blk, k, shifts0, [&](size_t half, auto codes) {
      hn::StoreU(hn::Mul(d, hn::Sub(codes, offset)), df, out + half * kHalf + k);
    });
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

// Group block `blk` dequantized into tile[j * 32 + k] = W[row j of the
// group, element k] (fp32, d * q + m rounded twice as the scalar
// reference). The SIMD lanes are rows: 8 elements of 4 or 8 rows come out
// of the rows' 32-bit words with one shift and mask each; on x86's 8-lane
// targets each 8 x 8 square is transposed in registers (3 rounds of
// interleaves) into 8 row pieces, elsewhere the lanes are stored and
// transposed through memory.
HWY_INLINE void DequantizeGroupBlock(const BlockQ4x8& blk, float* HWY_RESTRICT tile) {
  const hn::CappedTag<uint32_t, 8> du;
  const hn::Rebind<int32_t, decltype(du)> di;
  const hn::Rebind<float, decltype(du)> df;
  const auto nibble = hn::Set(du, 0x0Fu);
  const size_t lanes = hn::Lanes(df);
  for (size_t v = 0; v < static_cast<size_t>(kQ4GroupRows); v += lanes) {
    const auto d = GroupHalves(df, blk.d + v);
    const auto m = GroupHalves(df, blk.m + v);
    for (int u = 0; u < 4; ++u) {
      const auto words = hn::LoadU(du, reinterpret_cast<const uint32_t*>(blk.qs + 32 * u + 4 * v));
      // Element 8u + k of rows v .. v + lanes.
      auto element = [&](int k) {
        const auto q = hn::ConvertTo(
            df, hn::BitCast(di, hn::And(hn::ShiftRightSame(words, weights::Q4x8Shift(k)), nibble)));
        return hn::Add(hn::Mul(d, q), m);
      };
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
      // 8 lanes (CappedTag on AVX3 too). e_k[j] = W[j, k] -> r_j[k].
      const hn::Repartition<double, decltype(df)> dd;
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
      for (size_t j = 0; j < lanes; ++j) {
        for (int k = 0; k < 8; ++k) tile[(v + j) * kBlockSize + 8 * u + k] = e[k][j];
      }
#endif
    }
  }
}

// A group block at a time into an L1 tile (8 rows x 32), its rows in the
// range copied out: the output rows are written sequentially, as prefill's
// row-major tiles want them.
void DequantizeQ4Rows(const BlockQ4x8* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  const int64_t blocks = weights::BlocksPerRow(cols);
  HWY_ALIGN float tile[kQ4GroupRows * kBlockSize];
  for (int64_t g = row_begin / kQ4GroupRows; g * kQ4GroupRows < row_end; ++g) {
    const int64_t j0 = std::max<int64_t>(0, row_begin - g * kQ4GroupRows);
    const int64_t j1 = std::min<int64_t>(kQ4GroupRows, row_end - g * kQ4GroupRows);
    for (int64_t b = 0; b < blocks; ++b) {
      const BlockQ4x8& blk = w[g * blocks + b];
      const char* ahead = reinterpret_cast<const char*>(&blk + kQ4PrefetchBlocks);
      for (size_t line = 0; line < sizeof(BlockQ4x8); line += 64) hwy::Prefetch(ahead + line);
      DequantizeGroupBlock(blk, tile);
      const int64_t n = std::min<int64_t>(kBlockSize, cols - b * kBlockSize);
      for (int64_t j = j0; j < j1; ++j) {
        std::memcpy(out + (g * kQ4GroupRows + j - row_begin) * cols + b * kBlockSize,
                    tile + j * kBlockSize, n * sizeof(float));
      }
    }
  }
}

void DequantizeQ6Rows(const BlockQ6* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  DequantizeRowsT(w, cols, row_begin, row_end, out);
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

void MatVecQ6Rows(const weights::BlockQ6* w, int64_t cols, const float* x, float* y,
                  int64_t row_begin, int64_t row_end) {
  HWY_DYNAMIC_DISPATCH(MatVecQ6Rows)(w, cols, x, y, row_begin, row_end);
}

void DequantizeQ6Rows(const weights::BlockQ6* w, int64_t cols, int64_t row_begin, int64_t row_end,
                      float* out) {
  HWY_DYNAMIC_DISPATCH(DequantizeQ6Rows)(w, cols, row_begin, row_end, out);
}

}  // namespace qkvshare::agents::kernels
#endif  // HWY_ONCE

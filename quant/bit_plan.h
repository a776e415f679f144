// File: quant/bit_plan.h
// -----------------------------------------------------------------------------
// BitPlan: the bit width of every token's K and V, as chosen by the
// controller (quant/controller.h) and consumed by the kernels
// (quant/kernels.h) and the CacheCard (cachecard/).
#ifndef QKVSHARE_QUANT_BIT_PLAN_H_
#define QKVSHARE_QUANT_BIT_PLAN_H_

#include <cstdint>
#include <vector>

namespace qkvshare::quant {

// Widths a token may have: 2..8 (uniform asymmetric codes) or 16 (fp16 raw).
inline bool IsValidTokenBits(int b) { return (b >= 2 && b <= 8) || b == 16; }

struct BitPlan {
  std::vector<uint8_t> k_bits;  // [num_tokens], each IsValidTokenBits
  std::vector<uint8_t> v_bits;  // [num_tokens]
  // Mean of k_bits and v_bits over all tokens (code bits per element; group
  // parameters not included).
  double avg_bits = 0;
  int64_t num_tokens() const { return static_cast<int64_t>(k_bits.size()); }
};

}  // namespace qkvshare::quant

#endif  // QKVSHARE_QUANT_BIT_PLAN_H_

// File: quant/kernels.h
// -----------------------------------------------------------------------------
// KV-cache quantization kernels: asymmetric uniform quantization with
// token-level mixed widths, dense little-endian bit packing, and dequantization
// straight into a destination view (the agent's KV cache).
//
// Grouping (KIVI, arXiv 2402.02750):
//   - kPerChannel (keys): a group is G consecutive tokens of ONE channel;
//   - kPerToken (values): a group is G consecutive channels of ONE token
//     (channels run across heads: c = h * head_dim + d).
//   The last group along the axis may be shorter than G (never padded).
// Mixed widths: each group stores one range (lo, hi) as fp16 (lo rounded
// toward -inf, hi toward +inf, so the range covers every element); each
// element is coded with its token's width b as
//   code = round((x - lo) / (hi - lo) * (2^b - 1)),  x' = lo + code * (hi - lo) / (2^b - 1)
// so a per-channel group can hold tokens of different widths. Tokens of width
// 16 are stored as raw fp16 and do not take part in their groups' ranges.
// Error bound: |x - x'| <= (hi - lo) / (2 (2^b - 1)) + a few fp32 ulps
// (docs/quantization.md, "Error bounds").
// The exact byte layout (params before codes, LSB-first dense packing,
// little-endian) is specified in docs/quantization.md ("Packed layout").
//
// Paths: an AVX-512 kernel (F/BW/VL/DQ + BMI2) when the CPU has it, else a
// portable scalar one; both produce identical bytes and values.
//
// Thread safety: pure functions, safe to call concurrently on distinct outputs.
#ifndef QKVSHARE_QUANT_KERNELS_H_
#define QKVSHARE_QUANT_KERNELS_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "quant/kv_view.h"

namespace qkvshare::quant {

enum class GroupAxis : uint8_t {
  kPerChannel = 0,  // keys
  kPerToken = 1,    // values
};

struct GroupSpec {
  GroupAxis axis = GroupAxis::kPerChannel;
  int group_size = 32;  // G >= 1
};

// Bytes Quantize() writes for `token_bits.size()` tokens of `channels`
// channels: codes plus group parameters. Deterministic in its arguments;
// 0 if channels < 1, group_size < 1 or a width is not IsValidTokenBits.
size_t PackedBytes(int channels, const GroupSpec& spec, absl::Span<const uint8_t> token_bits);

// Quantizes `src` (num_tokens == token_bits.size()) into `out`, which must be
// exactly PackedBytes(...) long.
// `src` may be fp32, bf16 or fp16.
// Errors: InvalidArgument for a size mismatch, a width that is not
// IsValidTokenBits, a group size < 1, a bad view (head_stride <
// num_tokens * head_dim with several heads), or an element that is NaN, +-Inf
// or beyond the fp16 range |x| <= 65504 (fp16 group parameters and 16-bit
// tokens cannot hold it); the message names the first such element in token
// order ("NaN at token 5, channel 17 (head 2, dim 1)"). `out` is then
// unspecified.
absl::Status Quantize(const ConstKvView& src, const GroupSpec& spec,
                      absl::Span<const uint8_t> token_bits, absl::Span<uint8_t> out);

// Dequantizes `packed` (as written by Quantize with the same spec and widths)
// into `dst` (fp32, bf16 or fp16, rounded to nearest even; num_tokens ==
// token_bits.size()), without a temporary full-size buffer. Only the view's
// tokens are written (spare cache capacity beyond them is untouched).
// Errors: InvalidArgument for a size mismatch, an invalid width, or a blob
// whose group parameters or raw fp16 values are NaN/Inf (or lo > hi), i.e.
// corrupt; `dst` is then untouched (everything is checked before any write).
// On success every written value is finite.
absl::Status Dequantize(absl::Span<const uint8_t> packed, const GroupSpec& spec,
                        absl::Span<const uint8_t> token_bits, const KvView& dst);

}  // namespace qkvshare::quant

#endif  // QKVSHARE_QUANT_KERNELS_H_

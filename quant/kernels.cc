// Quantize/Dequantize: argument checks, the packed layout walk
// (docs/quantization.md, "Packed layout") and the choice of kernel path. The
// per-row arithmetic lives in kernels_scalar.cc (reference) and kernels_hwy.cc
// (Highway, every SIMD target).
#include "quant/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/dtype.h"
#include "quant/bit_plan.h"
#include "quant/fp16.h"
#include "quant/kernels_internal.h"

namespace qkvshare::quant {
namespace internal {
namespace {

constexpr int kMaxCodedBits = 8;

int NumGroups(int channels, int group_size) { return (channels + group_size - 1) / group_size; }

bool ValidDType(DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

// Checks shape fields shared by source and destination views.
absl::Status CheckView(const ConstKvView& v, const char* what, size_t num_tokens) {
  if (!ValidDType(v.dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": unknown dtype ", static_cast<int>(v.dtype)));
  }
  if (v.num_heads < 1 || v.head_dim < 1) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": num_heads ", v.num_heads,
                                                   " and head_dim ", v.head_dim, " must be >= 1"));
  }
  if (v.num_tokens < 0 || static_cast<size_t>(v.num_tokens) != num_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", v.num_tokens, " tokens but token_bits has ", num_tokens));
  }
  if (v.num_heads > 1 && v.head_stride < v.num_tokens * v.head_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": head_stride ", v.head_stride,
                     " < num_tokens * head_dim = ", v.num_tokens * v.head_dim));
  }
  if (v.num_tokens > 0 && v.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": null data"));
  }
  return absl::OkStatus();
}

absl::Status CheckSpecAndBits(const GroupSpec& spec, absl::Span<const uint8_t> token_bits) {
  if (spec.axis != GroupAxis::kPerChannel && spec.axis != GroupAxis::kPerToken) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown group axis ", static_cast<int>(spec.axis)));
  }
  if (spec.group_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("group size ", spec.group_size, " < 1"));
  }
  for (size_t t = 0; t < token_bits.size(); ++t) {
    if (!IsValidTokenBits(token_bits[t])) {
      return absl::InvalidArgumentError(absl::StrCat("token ", t, ": invalid width ",
                                                     static_cast<int>(token_bits[t]),
                                                     " bits (want 2..8 or 16)"));
    }
  }
  return absl::OkStatus();
}

// The first element (token-major order) among tokens t0..t0+nt of `src` that
// is NaN, infinite or beyond the fp16 range, as an error naming it.
absl::Status LocateBadValue(const ConstKvView& src, int64_t t0, int64_t nt) {
  for (int64_t t = t0; t < t0 + nt; ++t) {
    for (int h = 0; h < src.num_heads; ++h) {
      for (int d = 0; d < src.head_dim; ++d) {
        const int64_t i = h * src.head_stride + t * src.head_dim + d;
        float x;
        switch (src.dtype) {
          case DType::kBF16:
            x = Bf16ToFloat(static_cast<const uint16_t*>(src.data)[i]);
            break;
          case DType::kF16:
            x = HalfToFloat(static_cast<const uint16_t*>(src.data)[i]);
            break;
          default:
            x = static_cast<const float*>(src.data)[i];
        }
        if (x <= kFp16Max && x >= -kFp16Max) continue;
        const std::string where = absl::StrCat("token ", t, ", channel ", h * src.head_dim + d,
                                               " (head ", h, ", dim ", d, ")");
        if (std::isnan(x)) return absl::InvalidArgumentError(absl::StrCat("NaN at ", where));
        if (std::isinf(x)) return absl::InvalidArgumentError(absl::StrCat("Inf at ", where));
        return absl::InvalidArgumentError(
            absl::StrCat("value ", x, " at ", where,
                         " is beyond the fp16 range (|x| <= 65504) of the packed format"));
      }
    }
  }
  return absl::InternalError("a kernel reported a non-finite value that the rescan did not find");
}

const KernelOps* OpsFor(KernelPath path) {
  if (!KernelPathSupported(path)) return nullptr;
  return path == KernelPath::kSimd ? &SimdOps() : &ScalarOps();
}

// Scratch for one call: per-slot parameter arrays and one row of codes.
struct Scratch {
  explicit Scratch(int slots, int channels)
      : mn(slots), mx(slots), lo(slots), range(slots), codes(channels + 64) {
    for (auto& t : table) t.resize(slots);
  }
  std::vector<float> mn, mx, lo, range;
  std::vector<float> table[kMaxCodedBits + 1];  // scale (quantize) or step (dequantize) per width
  bool table_valid[kMaxCodedBits + 1] = {};
  std::vector<uint8_t> codes;
  void InvalidateTables() {
    for (bool& v : table_valid) v = false;
  }
};

bool AnyCoded(const uint8_t* bits, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (bits[i] <= kMaxCodedBits) return true;
  }
  return false;
}

absl::Status QuantizePerChannel(const KernelOps& ops, const ConstKvView& src, int group_size,
                                const uint8_t* bits, uint8_t* out) {
  const int channels = src.channels();
  Scratch s(channels, channels);
  for (int64_t t0 = 0; t0 < src.num_tokens; t0 += group_size) {
    const int nt = static_cast<int>(std::min<int64_t>(group_size, src.num_tokens - t0));
    if (AnyCoded(bits + t0, nt)) {
      if (!ops.min_max_per_channel(src, t0, nt, bits + t0, s.mn.data(), s.mx.data())) {
        return LocateBadValue(src, t0, nt);
      }
      ops.make_params(s.mn.data(), s.mx.data(), channels, out, s.lo.data(), s.range.data());
      out += 4 * static_cast<size_t>(channels);
      s.InvalidateTables();
    }
    for (int64_t t = t0; t < t0 + nt; ++t) {
      const int b = bits[t];
      if (b == 16) {
        if (!ops.raw_row(src, t, out)) return LocateBadValue(src, t, 1);
      } else {
        if (!s.table_valid[b]) {
          ops.scale_table(s.range.data(), channels, b, s.table[b].data());
          s.table_valid[b] = true;
        }
        ops.quantize_row_per_channel(src, t, s.lo.data(), s.table[b].data(), b, s.codes.data());
        ops.pack_row(s.codes.data(), channels, b, out);
      }
      out += RowBytes(channels, b);
    }
  }
  return absl::OkStatus();
}

absl::Status QuantizePerToken(const KernelOps& ops, const ConstKvView& src, int group_size,
                              const uint8_t* bits, uint8_t* out) {
  const int channels = src.channels();
  const int groups = NumGroups(channels, group_size);
  Scratch s(groups, channels);
  for (int64_t t = 0; t < src.num_tokens; ++t) {
    const int b = bits[t];
    if (b == 16) {
      if (!ops.raw_row(src, t, out)) return LocateBadValue(src, t, 1);
    } else {
      if (!ops.min_max_per_token(src, t, group_size, s.mn.data(), s.mx.data())) {
        return LocateBadValue(src, t, 1);
      }
      ops.make_params(s.mn.data(), s.mx.data(), groups, out, s.lo.data(), s.range.data());
      out += 4 * static_cast<size_t>(groups);
      ops.scale_table(s.range.data(), groups, b, s.table[0].data());
      ops.quantize_row_per_token(src, t, group_size, s.lo.data(), s.table[0].data(), b,
                                 s.codes.data());
      ops.pack_row(s.codes.data(), channels, b, out);
    }
    out += RowBytes(channels, b);
  }
  return absl::OkStatus();
}

absl::Status CorruptAt(int64_t t, size_t offset, const char* what) {
  return absl::InvalidArgumentError(absl::StrCat(
      "packed data: ", what, " of token ", t, " at byte ", offset,
      " is not finite (or lo > hi); corrupt, or not written by Quantize with this spec"));
}

// Walks the layout of a blob of the right size and checks every group
// parameter and raw fp16 value before Dequantize writes anything, so a
// corrupt blob cannot put NaN/Inf into a KV cache.
absl::Status ValidatePacked(const KernelOps& ops, const uint8_t* in, int channels,
                            const GroupSpec& spec, const uint8_t* bits, int64_t n) {
  const uint8_t* const begin = in;
  const int groups = NumGroups(channels, spec.group_size);
  for (int64_t t = 0; t < n; ++t) {
    const int b = bits[t];
    const bool block_start = t % spec.group_size == 0;
    if (spec.axis == GroupAxis::kPerChannel && block_start &&
        AnyCoded(bits + t, std::min<int64_t>(spec.group_size, n - t))) {
      if (!ops.params_valid(in, channels)) return CorruptAt(t, in - begin, "block parameters");
      in += 4 * static_cast<size_t>(channels);
    }
    if (spec.axis == GroupAxis::kPerToken && b <= kMaxCodedBits) {
      if (!ops.params_valid(in, groups)) return CorruptAt(t, in - begin, "group parameters");
      in += 4 * static_cast<size_t>(groups);
    }
    if (b == 16 && !ops.raw_row_valid(in, channels))
      return CorruptAt(t, in - begin, "raw fp16 row");
    in += RowBytes(channels, b);
  }
  return absl::OkStatus();
}

void DequantizePerChannel(const KernelOps& ops, const uint8_t* in, int group_size,
                          const uint8_t* bits, const KvView& dst) {
  const int channels = dst.channels();
  Scratch s(channels, channels);
  for (int64_t t0 = 0; t0 < dst.num_tokens; t0 += group_size) {
    const int nt = static_cast<int>(std::min<int64_t>(group_size, dst.num_tokens - t0));
    if (AnyCoded(bits + t0, nt)) {
      ops.load_params(in, channels, s.lo.data(), s.range.data());
      in += 4 * static_cast<size_t>(channels);
      s.InvalidateTables();
    }
    for (int64_t t = t0; t < t0 + nt; ++t) {
      const int b = bits[t];
      if (b == 16) {
        ops.raw_row_out(in, dst, t);
      } else {
        if (!s.table_valid[b]) {
          ops.step_table(s.range.data(), channels, b, s.table[b].data());
          s.table_valid[b] = true;
        }
        ops.unpack_row(in, channels, b, s.codes.data());
        ops.dequantize_row_per_channel(s.codes.data(), s.lo.data(), s.table[b].data(), dst, t);
      }
      in += RowBytes(channels, b);
    }
  }
}

void DequantizePerToken(const KernelOps& ops, const uint8_t* in, int group_size,
                        const uint8_t* bits, const KvView& dst) {
  const int channels = dst.channels();
  const int groups = NumGroups(channels, group_size);
  Scratch s(groups, channels);
  for (int64_t t = 0; t < dst.num_tokens; ++t) {
    const int b = bits[t];
    if (b == 16) {
      ops.raw_row_out(in, dst, t);
    } else {
      ops.load_params(in, groups, s.lo.data(), s.range.data());
      in += 4 * static_cast<size_t>(groups);
      ops.step_table(s.range.data(), groups, b, s.table[0].data());
      ops.unpack_row(in, channels, b, s.codes.data());
      ops.dequantize_row_per_token(s.codes.data(), group_size, s.lo.data(), s.table[0].data(), dst,
                                   t);
    }
    in += RowBytes(channels, b);
  }
}

}  // namespace

bool KernelPathSupported(KernelPath path) {
  // Highway always has a target (EMU128 or SCALAR at worst).
  return path == KernelPath::kScalar || path == KernelPath::kSimd;
}

const char* KernelPathName(KernelPath path) {
  return path == KernelPath::kSimd ? "simd" : "scalar";
}

KernelPath BestKernelPath() { return KernelPath::kSimd; }

absl::Status QuantizeWithPath(KernelPath path, const ConstKvView& src, const GroupSpec& spec,
                              absl::Span<const uint8_t> token_bits, absl::Span<uint8_t> out) {
  const KernelOps* ops = OpsFor(path);
  if (ops == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("kernel path ", KernelPathName(path), " is not supported on this CPU"));
  }
  if (absl::Status s = CheckSpecAndBits(spec, token_bits); !s.ok()) return s;
  if (absl::Status s = CheckView(src, "Quantize source", token_bits.size()); !s.ok()) return s;
  const size_t want = PackedBytes(src.channels(), spec, token_bits);
  if (out.size() != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("Quantize: output has ", out.size(), " bytes, PackedBytes() is ", want));
  }
  if (spec.axis == GroupAxis::kPerChannel) {
    return QuantizePerChannel(*ops, src, spec.group_size, token_bits.data(), out.data());
  }
  return QuantizePerToken(*ops, src, spec.group_size, token_bits.data(), out.data());
}

absl::Status DequantizeWithPath(KernelPath path, absl::Span<const uint8_t> packed,
                                const GroupSpec& spec, absl::Span<const uint8_t> token_bits,
                                const KvView& dst) {
  const KernelOps* ops = OpsFor(path);
  if (ops == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("kernel path ", KernelPathName(path), " is not supported on this CPU"));
  }
  if (absl::Status s = CheckSpecAndBits(spec, token_bits); !s.ok()) return s;
  if (absl::Status s = CheckView(dst, "Dequantize destination", token_bits.size()); !s.ok()) {
    return s;
  }
  const size_t want = PackedBytes(dst.channels(), spec, token_bits);
  if (packed.size() != want) {
    return absl::InvalidArgumentError(absl::StrCat("Dequantize: packed input has ", packed.size(),
                                                   " bytes, PackedBytes() is ", want));
  }
  if (absl::Status s = ValidatePacked(*ops, packed.data(), dst.channels(), spec, token_bits.data(),
                                      dst.num_tokens);
      !s.ok()) {
    return s;
  }
  if (spec.axis == GroupAxis::kPerChannel) {
    DequantizePerChannel(*ops, packed.data(), spec.group_size, token_bits.data(), dst);
  } else {
    DequantizePerToken(*ops, packed.data(), spec.group_size, token_bits.data(), dst);
  }
  return absl::OkStatus();
}

}  // namespace internal

size_t PackedBytes(int channels, const GroupSpec& spec, absl::Span<const uint8_t> token_bits) {
  if (channels < 1 || spec.group_size < 1) return 0;
  const size_t c = static_cast<size_t>(channels);
  size_t bytes = 0;
  const int64_t n = static_cast<int64_t>(token_bits.size());
  for (int64_t t = 0; t < n; ++t) {
    const int b = token_bits[t];
    if (!IsValidTokenBits(b)) return 0;
    bytes += internal::RowBytes(channels, b);
  }
  if (spec.axis == GroupAxis::kPerChannel) {
    for (int64_t t0 = 0; t0 < n; t0 += spec.group_size) {
      const int64_t nt = std::min<int64_t>(spec.group_size, n - t0);
      if (internal::AnyCoded(token_bits.data() + t0, nt)) bytes += 4 * c;
    }
  } else {
    const size_t groups = static_cast<size_t>(internal::NumGroups(channels, spec.group_size));
    for (int64_t t = 0; t < n; ++t) {
      if (token_bits[t] <= internal::kMaxCodedBits) bytes += 4 * groups;
    }
  }
  return bytes;
}

absl::Status Quantize(const ConstKvView& src, const GroupSpec& spec,
                      absl::Span<const uint8_t> token_bits, absl::Span<uint8_t> out) {
  return internal::QuantizeWithPath(internal::BestKernelPath(), src, spec, token_bits, out);
}

absl::Status Dequantize(absl::Span<const uint8_t> packed, const GroupSpec& spec,
                        absl::Span<const uint8_t> token_bits, const KvView& dst) {
  return internal::DequantizeWithPath(internal::BestKernelPath(), packed, spec, token_bits, dst);
}

}  // namespace qkvshare::quant

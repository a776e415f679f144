#include "cachecard/section_codec.h"

#include <cstring>

#include "cachecard/dtype_convert.h"
#include "quant/kernels.h"
#include "quant/kv_view.h"

namespace qkvshare::cachecard {
namespace {

// Byte address of (head 0, position `first`) of layer `layer`'s K or V.
size_t FirstTokenOffset(const agents::KvCache& cache, int64_t first) {
  return static_cast<size_t>(first) * cache.shape().head_dim * DTypeSize(cache.dtype());
}

}  // namespace

absl::Status EncodeSection(const agents::KvCache& cache, const SegmentInfo& seg, int layer,
                           bool is_key, absl::Span<uint8_t> out) {
  const agents::KvShape& shape = cache.shape();
  const auto* base =
      static_cast<const uint8_t*>(is_key ? cache.k_data(layer) : cache.v_data(layer)) +
      FirstTokenOffset(cache, seg.first_token);
  if (seg.mode == CardMode::kFull) {
    // Same dtype (REQUIRES): one contiguous run per head.
    const size_t run =
        static_cast<size_t>(seg.num_tokens) * shape.head_dim * DTypeSize(cache.dtype());
    const size_t head_stride_bytes =
        static_cast<size_t>(cache.head_stride()) * DTypeSize(cache.dtype());
    for (int h = 0; h < shape.num_kv_heads; ++h) {
      std::memcpy(out.data() + h * run, base + h * head_stride_bytes, run);
    }
    return absl::OkStatus();
  }
  quant::ConstKvView view;
  view.data = base;
  view.dtype = cache.dtype();
  view.num_heads = shape.num_kv_heads;
  view.head_dim = shape.head_dim;
  view.head_stride = cache.head_stride();
  view.num_tokens = seg.num_tokens;
  return quant::Quantize(view, is_key ? seg.k_group : seg.v_group, is_key ? seg.k_bits : seg.v_bits,
                         out);
}

absl::Status DecodeSection(absl::Span<const uint8_t> section, const SegmentInfo& seg, int layer,
                           bool is_key, agents::KvCache* cache) {
  const agents::KvShape& shape = cache->shape();
  auto* base = static_cast<uint8_t*>(is_key ? cache->k_data(layer) : cache->v_data(layer)) +
               FirstTokenOffset(*cache, seg.first_token);
  if (seg.mode == CardMode::kFull) {
    const size_t elements = static_cast<size_t>(seg.num_tokens) * shape.head_dim;
    const size_t src_run = elements * DTypeSize(seg.raw_dtype);
    const size_t head_stride_bytes =
        static_cast<size_t>(cache->head_stride()) * DTypeSize(cache->dtype());
    for (int h = 0; h < shape.num_kv_heads; ++h) {
      ConvertElements(section.data() + h * src_run, seg.raw_dtype, base + h * head_stride_bytes,
                      cache->dtype(), elements);
    }
    return absl::OkStatus();
  }
  quant::KvView view;
  view.data = base;
  view.dtype = cache->dtype();
  view.num_heads = shape.num_kv_heads;
  view.head_dim = shape.head_dim;
  view.head_stride = cache->head_stride();
  view.num_tokens = seg.num_tokens;
  return quant::Dequantize(section, is_key ? seg.k_group : seg.v_group,
                           is_key ? seg.k_bits : seg.v_bits, view);
}

}  // namespace qkvshare::cachecard

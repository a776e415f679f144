#include "agents/weights/quantized_matrix.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "quant/fp16.h"

namespace qkvshare::agents::weights {
namespace {

constexpr WeightFormat kAllFormats[] = {WeightFormat::kAuto, WeightFormat::kF32,
                                        WeightFormat::kBF16, WeightFormat::kF16,
                                        WeightFormat::kQ8,   WeightFormat::kQ4};

}  // namespace

std::string_view WeightFormatName(WeightFormat f) {
  switch (f) {
    case WeightFormat::kAuto:
      return "auto";
    case WeightFormat::kF32:
      return "f32";
    case WeightFormat::kBF16:
      return "bf16";
    case WeightFormat::kF16:
      return "f16";
    case WeightFormat::kQ8:
      return "q8";
    case WeightFormat::kQ4:
      return "q4";
  }
  return "auto";
}

absl::StatusOr<WeightFormat> ParseWeightFormat(std::string_view name) {
  for (WeightFormat f : kAllFormats) {
    if (WeightFormatName(f) == name) return f;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown weights '",
                                                 absl::string_view(name.data(), name.size()),
                                                 "' (expected auto, f32, bf16, f16, q8 or q4)"));
}

std::string_view BlockFormatName(BlockFormat f) {
  switch (f) {
    case BlockFormat::kQ8:
      return "q8";
    case BlockFormat::kQ4:
      return "q4";
    case BlockFormat::kQ6:
      return "q6";
  }
  return "q8";
}

std::optional<BlockFormat> EmbeddingFormat(BlockFormat layers) {
  if (layers == BlockFormat::kQ4) return BlockFormat::kQ6;
  return std::nullopt;
}

std::string WeightPolicyTag(BlockFormat layers) {
  std::string tag(BlockFormatName(layers));
  const std::optional<BlockFormat> e = EmbeddingFormat(layers);
  absl::StrAppend(&tag, "+embed:", e.has_value() ? std::string(BlockFormatName(*e)) : "16bit");
  return tag;
}

void QuantizedMatrix::Free::operator()(void* p) const { std::free(p); }

QuantizedMatrix::QuantizedMatrix(BlockFormat format, int64_t rows, int64_t cols)
    : format_(format),
      rows_(rows),
      cols_(cols),
      // q4 / q6: groups of 8 rows (BlockQ4x8 / BlockQ6x8), the last padded.
      bytes_(
          static_cast<size_t>((format == BlockFormat::kQ8 ? rows : Q4Groups(rows) * kQ4GroupRows) *
                              BlocksPerRow(cols)) *
          BlockBytes(format)) {
  // Matrices of 2 MiB or more go to 2 MiB-aligned memory advised for
  // transparent huge pages: decode streams every block once per token, and
  // 4 KiB pages cost a TLB miss per 4 KiB (as for dense weights,
  // ModelOptions::copy_weights_to_huge_pages). A no-op where THP is off.
  constexpr size_t kHuge = size_t{2} << 20;
  if (bytes_ >= kHuge) {
    const size_t size = (bytes_ + 64 + kHuge - 1) / kHuge * kHuge;
    data_.reset(std::aligned_alloc(kHuge, size));
    if (data_ != nullptr) madvise(data_.get(), size, MADV_HUGEPAGE);
  } else {
    data_.reset(std::aligned_alloc(64, (bytes_ + 63) / 64 * 64 + 64));
  }
  // Zeros: a q4 / q6 group's padding rows (zero blocks: value 0), and bytes that
  // are equal whichever rows were filled first.
  if (data_ != nullptr) std::memset(data_.get(), 0, bytes_);
}

absl::Status QuantizedMatrix::QuantizeRows(const void* src, DType dtype, int64_t row_begin,
                                           int64_t row_end) {
  std::vector<float> row(cols_);
  std::vector<BlockQ4> q4_row;
  std::vector<BlockQ6> q6_row;
  const int64_t bpr = blocks_per_row();
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t base = r * cols_;
    for (int64_t c = 0; c < cols_; ++c) {
      switch (dtype) {
        case DType::kF32:
          row[c] = static_cast<const float*>(src)[base + c];
          break;
        case DType::kBF16:
          row[c] = Bf16ToFloat(static_cast<const uint16_t*>(src)[base + c]);
          break;
        case DType::kF16:
          row[c] = quant::HalfToFloat(static_cast<const uint16_t*>(src)[base + c]);
          break;
      }
    }
    if (absl::Status ok = CheckQuantizableRow(row); !ok.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("row ", r, ", ", ok.message()));
    }
    switch (format_) {
      case BlockFormat::kQ8:
        QuantizeRowQ8(row, static_cast<BlockQ8*>(data_.get()) + r * bpr);
        break;
      case BlockFormat::kQ4:
        q4_row.resize(bpr);
        QuantizeRowQ4(row, q4_row.data());
        SetRowBlocks(r, q4_row.data());
        break;
      case BlockFormat::kQ6:
        q6_row.resize(bpr);
        QuantizeRowQ6(row, q6_row.data());
        SetRowBlocks(r, q6_row.data());
        break;
    }
  }
  return absl::OkStatus();
}

namespace {

// Row `row`'s blocks into / out of groups of 8 rows (q4: BlockQ4x8, q6:
// BlockQ6x8), block column by block column.

template <class Block, class Group>
void SetGroupRows(void* data, int64_t bpr, int64_t row, const void* blocks) {
  Group* group = static_cast<Group*>(data) + row / kQ4GroupRows * bpr;
  const auto* src = static_cast<const Block*>(blocks);
  for (int64_t b = 0; b < bpr; ++b)
    SetGroupRow(src[b], static_cast<int>(row % kQ4GroupRows), group[b]);
}

template <class Block, class Group>
void GetGroupRows(const void* data, int64_t bpr, int64_t row, void* out) {
  const Group* group = static_cast<const Group*>(data) + row / kQ4GroupRows * bpr;
  auto* dst = static_cast<Block*>(out);
  for (int64_t b = 0; b < bpr; ++b)
    dst[b] = GetGroupRow(group[b], static_cast<int>(row % kQ4GroupRows));
}

}  // namespace

void QuantizedMatrix::SetRowBlocks(int64_t row, const void* blocks) {
  const int64_t bpr = blocks_per_row();
  if (format_ == BlockFormat::kQ4)
    return SetGroupRows<BlockQ4, BlockQ4x8>(data_.get(), bpr, row, blocks);
  if (format_ == BlockFormat::kQ6)
    return SetGroupRows<BlockQ6, BlockQ6x8>(data_.get(), bpr, row, blocks);
  const size_t row_bytes = static_cast<size_t>(bpr) * BlockBytes(format_);
  std::memcpy(static_cast<char*>(data_.get()) + row * row_bytes, blocks, row_bytes);
}

void QuantizedMatrix::GetRowBlocks(int64_t row, void* out) const {
  const int64_t bpr = blocks_per_row();
  if (format_ == BlockFormat::kQ4)
    return GetGroupRows<BlockQ4, BlockQ4x8>(data_.get(), bpr, row, out);
  if (format_ == BlockFormat::kQ6)
    return GetGroupRows<BlockQ6, BlockQ6x8>(data_.get(), bpr, row, out);
  const size_t row_bytes = static_cast<size_t>(bpr) * BlockBytes(format_);
  std::memcpy(out, static_cast<const char*>(data_.get()) + row * row_bytes, row_bytes);
}

}  // namespace qkvshare::agents::weights

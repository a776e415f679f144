#include "agents/attention_capture.h"

#include <algorithm>
#include <cstring>

namespace qkvshare::agents {

AttentionRecorder::AttentionRecorder(int num_layers, int num_kv_heads, int window)
    : num_layers_(num_layers), num_kv_heads_(num_kv_heads), window_(window), layers_(num_layers) {}

void AttentionRecorder::AddRows(int layer, int64_t first_position, int64_t num_rows,
                                const float* probs, int64_t row_stride) {
  std::deque<Row>& rows = layers_[layer];
  const int64_t skip = std::max<int64_t>(0, num_rows - window_);
  for (int64_t r = skip; r < num_rows; ++r) {
    const int64_t pos = first_position + r;
    Row row{pos, std::vector<float>(static_cast<size_t>(num_kv_heads_) * (pos + 1))};
    for (int h = 0; h < num_kv_heads_; ++h) {
      std::memcpy(row.probs.data() + h * (pos + 1), probs + (h * num_rows + r) * row_stride,
                  (pos + 1) * sizeof(float));
    }
    rows.push_back(std::move(row));
    if (static_cast<int>(rows.size()) > window_) rows.pop_front();
  }
}

void AttentionRecorder::Truncate(int64_t n) {
  for (auto& rows : layers_) {
    while (!rows.empty() && rows.back().position >= n) rows.pop_back();
  }
}

void AttentionRecorder::Clear() {
  for (auto& rows : layers_) rows.clear();
}

AttentionCapture AttentionRecorder::Export(int64_t context) const {
  AttentionCapture out;
  out.num_layers = num_layers_;
  out.num_kv_heads = num_kv_heads_;
  out.context = context;
  out.rows = layers_.empty() ? 0 : static_cast<int64_t>(layers_[0].size());
  if (out.rows > 0) {
    for (const Row& row : layers_[0]) out.query_positions.push_back(row.position);
  }
  out.probs.assign(static_cast<size_t>(num_layers_) * num_kv_heads_ * out.rows * context, 0.0f);
  for (int l = 0; l < num_layers_; ++l) {
    for (int64_t r = 0; r < out.rows; ++r) {
      const Row& row = layers_[l][r];
      const int64_t n = std::min(row.position + 1, context);
      for (int h = 0; h < num_kv_heads_; ++h) {
        std::memcpy(
            &out.probs[((static_cast<int64_t>(l) * num_kv_heads_ + h) * out.rows + r) * context],
            row.probs.data() + h * (row.position + 1), n * sizeof(float));
      }
    }
  }
  return out;
}

}  // namespace qkvshare::agents

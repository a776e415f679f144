// File: agents/attention_capture.h
// -----------------------------------------------------------------------------
// Attention capture for the quantization controller's token-importance
// scores: per layer and per kv head, the softmax attention probabilities of
// the LAST `window` query positions a Sequence has run (across prefill
// chunks and decode steps), averaged over the query heads of the kv head's
// GQA group.
//
// AttentionCapture is the exported value. AttentionRecorder is the
// accumulator a Sequence owns while capture is on; the runtime feeds it one
// batch of consecutive query rows per layer and forward call. Capture costs
// nothing when off (the Sequence holds no recorder).
//
// Thread safety: none; owned by one Sequence.
#ifndef QKVSHARE_AGENTS_ATTENTION_CAPTURE_H_
#define QKVSHARE_AGENTS_ATTENTION_CAPTURE_H_

#include <cstdint>
#include <deque>
#include <vector>

namespace qkvshare::agents {

struct AttentionCapture {
  int num_layers = 0;
  int num_kv_heads = 0;
  int64_t rows = 0;     // captured query positions (<= window)
  int64_t context = 0;  // columns: the sequence length at export
  // Position of each row's query token, ascending ([rows]).
  std::vector<int64_t> query_positions;
  // [num_layers][num_kv_heads][rows][context] fp32. Row r sums to 1 over
  // columns 0 .. query_positions[r] (causal); later columns are 0.
  std::vector<float> probs;

  float at(int layer, int kv_head, int64_t row, int64_t column) const {
    return probs[((static_cast<int64_t>(layer) * num_kv_heads + kv_head) * rows + row) * context +
                 column];
  }
};

class AttentionRecorder {
 public:
  // REQUIRES: num_layers, num_kv_heads, window > 0.
  AttentionRecorder(int num_layers, int num_kv_heads, int window);

  int window() const { return window_; }

  // Records `num_rows` consecutive query rows of `layer`, for query positions
  // first_position .. first_position + num_rows - 1. `probs` is
  // [num_kv_heads][num_rows][row_stride] fp32 (group-averaged); row r holds
  // first_position + r + 1 valid columns. Only the last window() rows are
  // kept.
  void AddRows(int layer, int64_t first_position, int64_t num_rows, const float* probs,
               int64_t row_stride);

  // Drops rows whose query position is >= n (after Sequence::Truncate).
  void Truncate(int64_t n);
  void Clear();

  // The captured rows as [layers][kv_heads][rows][context]; `context` is the
  // current sequence length (>= every captured position + 1).
  AttentionCapture Export(int64_t context) const;

 private:
  struct Row {
    int64_t position;
    std::vector<float> probs;  // [num_kv_heads][position + 1]
  };
  int num_layers_;
  int num_kv_heads_;
  int window_;
  std::vector<std::deque<Row>> layers_;
};

}  // namespace qkvshare::agents

#endif  // QKVSHARE_AGENTS_ATTENTION_CAPTURE_H_

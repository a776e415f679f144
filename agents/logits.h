// File: agents/logits.h
// -----------------------------------------------------------------------------
// Which positions a forward pass returns logits for, and a non-owning view
// of the result. Shared by Sequence (agents/sequence.h) and the torch engine.
#ifndef QKVSHARE_AGENTS_LOGITS_H_
#define QKVSHARE_AGENTS_LOGITS_H_

#include <cstdint>

#include "absl/types/span.h"

namespace qkvshare::agents {

enum class LogitsMode {
  kNone,  // no logits (e.g. feeding the final generated token of a hop)
  kLast,  // the last appended position only (next-token prediction)
  kAll,   // every appended position (golden logits, fidelity evaluation)
};

// `rows` x `vocab` fp32 logits, row-major; row r belongs to the r-th
// requested position. Points into the owning Sequence's buffer: valid until
// the next mutating call on that Sequence.
struct LogitsView {
  const float* data = nullptr;
  int64_t rows = 0;
  int64_t vocab = 0;

  absl::Span<const float> row(int64_t r) const {
    return absl::Span<const float>(data + r * vocab, static_cast<size_t>(vocab));
  }
};

}  // namespace qkvshare::agents

#endif  // QKVSHARE_AGENTS_LOGITS_H_

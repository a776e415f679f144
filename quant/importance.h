// File: quant/importance.h
// -----------------------------------------------------------------------------
// Per-token importance for the controller (quant/controller.h): how much
// attention each context token received from the LAST FEW query positions of
// the producing agent: those queries are the closest proxy for what the next
// agent will attend to. A short recent window (rather than H2O-style
// accumulation over all positions) is the project's measured choice; see
// docs/quantization.md ("Importance").
//
// Input: attention probabilities as one dense fp32 array
//   [num_layers][num_kv_heads][rows][ctx]
// where rows are the last `rows` query positions of the prefill (oldest
// first; the last row is the final prompt token) and each row is that query's
// softmax over the ctx context tokens. For GQA models the producer reduces the
// query heads of each kv head's group (e.g. their mean) before calling. A row
// of an earlier query is causally shorter than ctx: it must be zero beyond its
// own length.
//
// Definition (H = num_layers * num_kv_heads "heads", w = min(window, rows);
// row r is query position ctx - rows + r, so it can attend to tokens
// j <= ctx - rows + r):
//   V_j           = the last w rows that can attend to j  (visible_rows_mean,
//                   the default; |V_j| >= 1 since the last row sees all)
//                 | all of the last w rows                  (otherwise)
//   s_k[j]        = (1/|V_j|) * sum over r in V_j of  a[k][r][j]
//   importance[j] = mean_k s_k[j]   (HeadReduction::kMean)
//                 = max_k  s_k[j]   (HeadReduction::kMax, the default)
// The rows a query cannot see are 0, so dividing by w instead of |V_j| would
// under-weight the last w-1 tokens (token ctx-1 by a factor w), which are
// exactly the ones the next agent's first queries attend to most.
//
// Thread safety: pure function.
//
// Example:
//   AttentionRows rows{attn.data(), num_layers, num_kv_heads, /*rows=*/4, ctx};
//   QKV_ASSIGN_OR_RETURN(std::vector<float> imp, TokenImportance(rows, {}));
#ifndef QKVSHARE_QUANT_IMPORTANCE_H_
#define QKVSHARE_QUANT_IMPORTANCE_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace qkvshare::quant {

enum class HeadReduction : uint8_t {
  kMean = 0,  // mean over the H heads
  kMax = 1,   // max over the H heads
};

// A non-owning view of [num_layers][num_kv_heads][rows][ctx] fp32
// attention probabilities (see the file comment).
struct AttentionRows {
  const float* data = nullptr;
  int num_layers = 0;
  int num_kv_heads = 0;
  int rows = 0;     // query positions held per head (the last `rows` of the prompt)
  int64_t ctx = 0;  // context tokens (keys) per row
};

struct ImportanceOptions {
  // Last query positions averaged per head; more than `rows` uses all rows.
  int window = 4;
  HeadReduction reduction = HeadReduction::kMax;
  // Average each token over the window rows that can attend to it (see the
  // file comment); false: over all w rows (the rule before the fidelity
  // evaluation, docs/results.md, kept for comparison).
  bool visible_rows_mean = true;
};

// importance[ctx] as defined above; every value finite and >= 0.
// Errors: InvalidArgument for a dimension < 1, a null `data`, window < 1, or
// an element of the used rows that is negative or not finite (naming layer,
// kv head, row and token).
absl::StatusOr<std::vector<float>> TokenImportance(const AttentionRows& attention,
                                                   const ImportanceOptions& options = {});

}  // namespace qkvshare::quant

#endif  // QKVSHARE_QUANT_IMPORTANCE_H_

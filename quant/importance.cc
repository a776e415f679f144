// TokenImportance: the last-queries attention reducer of quant/importance.h.
#include "quant/importance.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace qkvshare::quant {
namespace {

// The divisor of token j's window sum: w, or (visible_rows_mean) the number
// of the last w rows whose query can attend to j. Row r is query position
// ctx - rows + r, so it sees j iff r >= j - (ctx - rows); never 0, since the
// last row sees every token.
int VisibleRows(const AttentionRows& a, int w, int64_t j, bool visible_rows_mean) {
  if (!visible_rows_mean) return w;
  const int64_t first_seeing = std::max<int64_t>(a.rows - w, j - (a.ctx - a.rows));
  return static_cast<int>(a.rows - first_seeing);
}

}  // namespace

absl::StatusOr<std::vector<float>> TokenImportance(const AttentionRows& a,
                                                   const ImportanceOptions& options) {
  if (a.num_layers < 1 || a.num_kv_heads < 1 || a.rows < 1 || a.ctx < 1) {
    return absl::InvalidArgumentError(absl::StrCat("attention rows [", a.num_layers, "][",
                                                   a.num_kv_heads, "][", a.rows, "][", a.ctx,
                                                   "]: every dimension must be >= 1"));
  }
  if (a.data == nullptr) return absl::InvalidArgumentError("attention rows: null data");
  if (options.window < 1) {
    return absl::InvalidArgumentError(absl::StrCat("window ", options.window, " < 1"));
  }
  const int w = std::min(options.window, a.rows);
  const int heads = a.num_layers * a.num_kv_heads;
  const int64_t ctx = a.ctx;
  std::vector<double> acc(ctx, 0.0);   // sum (kMean) or max (kMax) over heads of s_k
  std::vector<double> head(ctx, 0.0);  // s_k * w for the current head
  for (int k = 0; k < heads; ++k) {
    std::fill(head.begin(), head.end(), 0.0);
    for (int r = a.rows - w; r < a.rows; ++r) {
      const float* row = a.data + (static_cast<int64_t>(k) * a.rows + r) * ctx;
      for (int64_t j = 0; j < ctx; ++j) {
        const float p = row[j];
        if (!(p >= 0) || !std::isfinite(p)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "attention of layer ", k / a.num_kv_heads, ", kv head ", k % a.num_kv_heads, ", row ",
              r, ", token ", j, " is ", p, " (want finite and >= 0)"));
        }
        head[j] += p;
      }
    }
    for (int64_t j = 0; j < ctx; ++j) {
      const double s = head[j] / VisibleRows(a, w, j, options.visible_rows_mean);
      acc[j] = options.reduction == HeadReduction::kMean ? acc[j] + s : std::max(acc[j], s);
    }
  }
  std::vector<float> out(ctx);
  for (int64_t j = 0; j < ctx; ++j) {
    out[j] =
        static_cast<float>(options.reduction == HeadReduction::kMean ? acc[j] / heads : acc[j]);
  }
  return out;
}

}  // namespace qkvshare::quant

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
      const double s = head[j] / w;
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

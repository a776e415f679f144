#include "agents/torch/parallel.h"

#include <ATen/Parallel.h>

namespace qkvshare::agents::internal {

void TorchParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  at::parallel_for(0, n, grain, fn);
}

}  // namespace qkvshare::agents::internal

#include "agents/compute_threads.h"

#include <unistd.h>

#include <cstdlib>

#include "agents/torch/llama_engine.h"

namespace qkvshare::agents {

void SetComputeThreads(int n) { internal::SetComputeThreads(n); }

int ComputeThreads() { return internal::ComputeThreads(); }

void ReexecWithShortOpenMpSpin(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) {
    return;
  }
  setenv("GOMP_SPINCOUNT", "2000", 1);
  // OpenBLAS's idle workers likewise spin (sched_yield) for 2^28 cycles after
  // each GEMM by default; 2^4 hands the cores back at once (compute_threads.h).
  setenv("OPENBLAS_THREAD_TIMEOUT", "4", /*overwrite=*/0);
  execv("/proc/self/exe", argv);
  // exec failed (no /proc): keep running with libgomp's default policy.
}

}  // namespace qkvshare::agents

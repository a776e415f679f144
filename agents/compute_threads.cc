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
  execv("/proc/self/exe", argv);
  // exec failed (no /proc): keep running with libgomp's default policy.
}

}  // namespace qkvshare::agents

#include "agents/compute_threads.h"

#include "agents/torch/llama_engine.h"

namespace qkvshare::agents {

void SetComputeThreads(int n) { internal::SetComputeThreads(n); }

int ComputeThreads() { return internal::ComputeThreads(); }

}  // namespace qkvshare::agents

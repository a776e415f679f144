// File: agents/compute_threads.h
// -----------------------------------------------------------------------------
// Intra-op parallelism of the runtime: libtorch's OpenMP pool (bf16 GEMMs,
// elementwise ops, the decode kernels) and, when OpenBLAS is libtorch's BLAS,
// OpenBLAS's own pool (fp32 GEMMs). PROCESS-GLOBAL: at::set_num_threads
// affects every model and sequence in the process; set it once at start-up
// (the daemon's main, the CLI, a benchmark), not per request.
//
// Thread safety: call from one thread while no forward pass runs.
#ifndef QKVSHARE_AGENTS_COMPUTE_THREADS_H_
#define QKVSHARE_AGENTS_COMPUTE_THREADS_H_

namespace qkvshare::agents {

// Sets the intra-op thread count; n <= 0 means all cores
// (std::thread::hardware_concurrency()). libtorch's default is all cores.
void SetComputeThreads(int n);

// The current intra-op thread count.
int ComputeThreads();

}  // namespace qkvshare::agents

#endif  // QKVSHARE_AGENTS_COMPUTE_THREADS_H_

// File: agents/torch/parallel.h
// -----------------------------------------------------------------------------
// INTERNAL: kernels::ParallelFor (agents/kernels/decode_step.h) over
// libtorch's intra-op OpenMP pool, so the decode kernels use the same
// process-wide thread count as the GEMMs (agents/compute_threads.h).
//
// Build contract: at::parallel_for is a header template whose OpenMP region
// (ATen/ParallelOpenMP.h) is compiled only under `#ifdef _OPENMP`, i.e. into
// the caller's object file. Every translation unit here that calls
// at::parallel_for must be compiled with -fopenmp (agents/torch/BUILD), or it
// silently runs on one thread; parallel_test checks this.
#ifndef QKVSHARE_AGENTS_TORCH_PARALLEL_H_
#define QKVSHARE_AGENTS_TORCH_PARALLEL_H_

#include <cstdint>
#include <functional>

namespace qkvshare::agents::internal {

// Runs fn(begin, end) over disjoint chunks covering [0, n), each at least
// `grain` long (except maybe the last), on up to at::get_num_threads()
// threads; returns when all are done. Runs inline on the caller when n <=
// grain or when called from inside another parallel region.
void TorchParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace qkvshare::agents::internal

#endif  // QKVSHARE_AGENTS_TORCH_PARALLEL_H_

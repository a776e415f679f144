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

// Call first thing in main() of every binary that runs the model. libgomp
// (libtorch's OpenMP pool) reads its wait policy once, when it loads. Its
// default lets idle workers spin for a long time; on a 2-core box they then
// steal the cores from OpenBLAS's pool (fp32 GEMMs) and from other agents or
// processes. Fully passive waiting costs a futex wake per parallel region,
// which slows bf16 prefill. A short spin (GOMP_SPINCOUNT=2000) keeps most of
// both: measured on 2 cores (docs/performance.md "OpenMP waiting"),
// small-100m bf16 prefill 512: 1987 tokens/s vs 1688 passive; two processes
// at once: 852 vs 1011 passive and 341 with a 20000 spin; smollm-135m fp32
// prefill of 1024 tokens: 1.8 s vs 7.8 s with libgomp's default.
// OpenBLAS's pool (fp32 GEMMs) has the same habit: its idle workers spin in
// sched_yield for 2^28 cycles (~0.1 s) after each GEMM, so the decode step
// right after a prefill shared the 2 cores with them. OPENBLAS_THREAD_TIMEOUT=4
// (measured 2026-12-02, Zen 3, small-100m, 4 interleaved rounds: a 9-token
// step at depth 512 right after a prefill, bf16 weights 35-73 -> 31-32 ms, f32
// 28-62 -> 28-30 ms; prefill 512 bf16 719-868 -> 751-936 tokens/s, f32 equal).
// If neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set, sets
// GOMP_SPINCOUNT=2000 (and OPENBLAS_THREAD_TIMEOUT=4 unless set) and re-execs
// /proc/self/exe with the same argv; returns without re-exec when the caller
// chose a policy or exec fails.
void ReexecWithShortOpenMpSpin(char** argv);

}  // namespace qkvshare::agents

#endif  // QKVSHARE_AGENTS_COMPUTE_THREADS_H_

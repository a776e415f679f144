// File: base/cpu_info.h
// -----------------------------------------------------------------------------
// What CPU this process runs on and which SIMD target the Highway kernels
// (agents/kernels, quant, cachecard) dispatch to. Every benchmark prints
// CpuSummary() in its header so numbers always name the CPU and the target;
// tests and benchmarks can force a weaker target with ForceSimdTarget().
//
// Targets are Highway's (hwy/targets.h): on x86 SSE4, AVX2, AVX3 (AVX-512
// F/BW/DQ/VL), AVX3_DL (+VNNI/VBMI2/BITALG...); on aarch64 NEON, SVE, SVE2;
// EMU128 (portable 128-bit emulation) and SCALAR everywhere.
//
// Thread safety: the queries are thread-safe; ForceSimdTarget() is not (call
// it at start-up, before kernels run).
#ifndef QKVSHARE_BASE_CPU_INFO_H_
#define QKVSHARE_BASE_CPU_INFO_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace qkvshare {

// The CPU's model name ("AMD EPYC 7B13", "Cortex-A76"...) from /proc/cpuinfo
// (x86: "model name"; aarch64: "CPU part" mapped for common Arm cores, else
// "implementer 0x.. part 0x.."); "unknown" when it cannot be read.
std::string CpuModelName();

// Highway target bits (HWY_AVX2, HWY_NEON, ...) that this binary was compiled
// for AND this CPU supports right now (after any ForceSimdTarget), best first.
std::vector<int64_t> UsableSimdTargets();

// Name of the target HWY_DYNAMIC_DISPATCH picks now ("AVX2", "NEON", ...).
std::string BestSimdTargetName();

// One line for benchmark headers, e.g.
// "cpu: AMD EPYC 7B13 | simd: AVX2 (usable: AVX2 SSE4 EMU128)".
std::string CpuSummary();

// Restricts dispatch to the named target (case-insensitive Highway name, e.g.
// "avx2", "sse4", "emu128", "neon") and every weaker one it implies; "" or
// "best" undoes it. Errors: InvalidArgument for an unknown name,
// FailedPrecondition when the target is not compiled in or not supported by
// this CPU.
absl::Status ForceSimdTarget(absl::string_view name);

// True when the CPU multiplies bf16 natively (x86: AVX512_BF16 with usable
// AVX-512 state, or AMX-BF16; aarch64: the BF16 extension, HWCAP2_BF16), so
// that bf16 GEMMs beat fp32 ones. On x86 it also requires the AVX3 target
// to be usable, so ForceSimdTarget("avx2") on such a CPU emulates an
// AVX2-only CPU here too (call it before loading models).
bool CpuHasNativeBf16();

}  // namespace qkvshare

#endif  // QKVSHARE_BASE_CPU_INFO_H_

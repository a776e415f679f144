#include "base/cpu_info.h"

#include <fstream>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#endif

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "hwy/highway.h"
#include "hwy/targets.h"

namespace qkvshare {
namespace {

// Value of the first "key : value" line of /proc/cpuinfo whose key is `key`.
std::string CpuInfoField(absl::string_view key) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    if (absl::StripAsciiWhitespace(absl::string_view(line).substr(0, colon)) == key) {
      return std::string(absl::StripAsciiWhitespace(absl::string_view(line).substr(colon + 1)));
    }
  }
  return "";
}

// Arm core names for the parts edge boards use (implementer 0x41 = Arm Ltd).
const char* ArmPartName(int part) {
  switch (part) {
    case 0xd03:
      return "Cortex-A53";
    case 0xd04:
      return "Cortex-A35";
    case 0xd05:
      return "Cortex-A55";
    case 0xd07:
      return "Cortex-A57";
    case 0xd08:
      return "Cortex-A72";
    case 0xd09:
      return "Cortex-A73";
    case 0xd0a:
      return "Cortex-A75";
    case 0xd0b:
      return "Cortex-A76";
    case 0xd0c:
      return "Neoverse-N1";
    case 0xd0d:
      return "Cortex-A77";
    case 0xd40:
      return "Neoverse-V1";
    case 0xd41:
      return "Cortex-A78";
    case 0xd42:
      return "Cortex-A78AE";
    case 0xd46:
      return "Cortex-A510";
    case 0xd47:
      return "Cortex-A710";
    case 0xd49:
      return "Neoverse-N2";
    case 0xd4f:
      return "Neoverse-V2";
    default:
      return nullptr;
  }
}

}  // namespace

std::string CpuModelName() {
  std::string name = CpuInfoField("model name");
  if (!name.empty()) return name;
  const std::string implementer = CpuInfoField("CPU implementer");
  const std::string part = CpuInfoField("CPU part");
  if (part.empty()) return "unknown";
  int part_value = 0;
  if (implementer == "0x41" && absl::SimpleHexAtoi(part, &part_value)) {
    if (const char* arm = ArmPartName(part_value)) return arm;
  }
  return absl::StrCat("implementer ", implementer, " part ", part);
}

std::vector<int64_t> UsableSimdTargets() {
  std::vector<int64_t> targets;
  const int64_t usable = hwy::SupportedTargets() & HWY_TARGETS;
  // Highway orders targets by preference: a lower bit is a better target.
  for (int bit = 0; bit < 63; ++bit) {
    const int64_t t = int64_t{1} << bit;
    if (usable & t) targets.push_back(t);
  }
  return targets;
}

std::string BestSimdTargetName() {
  const std::vector<int64_t> targets = UsableSimdTargets();
  return targets.empty() ? "none" : hwy::TargetName(targets.front());
}

std::string CpuSummary() {
  std::vector<std::string> names;
  for (int64_t t : UsableSimdTargets()) names.push_back(hwy::TargetName(t));
  return absl::StrCat("cpu: ", CpuModelName(), " | simd: ", BestSimdTargetName(),
                      " (usable: ", absl::StrJoin(names, " "), ")");
}

absl::Status ForceSimdTarget(absl::string_view name) {
  if (name.empty() || absl::EqualsIgnoreCase(name, "best")) {
    hwy::SetSupportedTargetsForTest(0);
    return absl::OkStatus();
  }
  for (int bit = 0; bit < 63; ++bit) {
    const int64_t t = int64_t{1} << bit;
    const char* target_name = hwy::TargetName(t);
    if (!absl::EqualsIgnoreCase(name, target_name)) continue;
    hwy::SetSupportedTargetsForTest(0);
    const int64_t supported = hwy::SupportedTargets();
    if ((HWY_TARGETS & t) == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("SIMD target ", target_name, " is not compiled into this binary"));
    }
    if ((supported & t) == 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "SIMD target ", target_name, " is not supported by this CPU (", CpuModelName(), ")"));
    }
    // Keep `t` and every weaker (higher-bit) target; drop the better ones.
    hwy::SetSupportedTargetsForTest(supported & ~(t - 1));
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown SIMD target '", name, "' (e.g. avx3, avx2, sse4, neon, sve, emu128)"));
}

bool CpuHasNativeBf16() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  const bool amx_bf16 = (edx >> 22) & 1u;
  // AVX512_BF16 (CPUID.(7,1):EAX[5]) needs the OS to save AVX-512 state,
  // which Highway's AVX3 detection checks (every AMX CPU has AVX-512).
  const bool avx3 = (hwy::SupportedTargets() & HWY_AVX3) != 0;
  unsigned eax1 = 0, ebx1 = 0, ecx1 = 0, edx1 = 0;
  const bool avx512_bf16 =
      __get_cpuid_count(7, 1, &eax1, &ebx1, &ecx1, &edx1) != 0 && ((eax1 >> 5) & 1u) != 0;
  return avx3 && (amx_bf16 || avx512_bf16);
#elif defined(__aarch64__) && defined(__linux__)
#ifndef HWCAP2_BF16
#define HWCAP2_BF16 (1 << 14)
#endif
  return (getauxval(AT_HWCAP2) & HWCAP2_BF16) != 0;
#else
  return false;
#endif
}

}  // namespace qkvshare

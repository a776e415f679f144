// weight_quality: quality of quantized weights on a real model, teacher-forced
// over the golden prompts' continuations against the unquantized model
// (eval/weight_quality.h; the numbers in docs/results.md "Quantized weights").
//
//   bazel run -c opt //eval:weight_quality -- --weights=q8,q4,q4_0,q4_1
//   bazel run -c opt //eval:weight_quality -- --weights=q8 --runtime=q8,q4
//     (the runtime's q8/q4 models on their prefill and decode paths)
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "agents/compute_threads.h"
#include "agents/model.h"
#include "agents/weights/quantized_matrix.h"
#include "base/cpu_info.h"
#include "base/dtype.h"
#include "base/status_macros.h"
#include "eval/golden_cases.h"
#include "eval/weight_quality.h"

ABSL_FLAG(std::string, model, "models/stories260K", "HF model directory (the f32 reference).");
ABSL_FLAG(std::string, golden, "", "greedy.json (default: <model>/golden/greedy.json).");
ABSL_FLAG(std::string, weights, "q8,q4,q4_0,q4_0_search,q4_1,q4_k",
          "Weight schemes to measure (comma list; q8 and q4 are the runtime's formats).");
ABSL_FLAG(std::string, embeddings, "",
          "Scheme of the token embedding / lm_head (e.g. q6, the runtime's policy for q4; q8); "
          "default: they stay as stored.");
ABSL_FLAG(std::string, runtime, "",
          "Also measure the runtime's own path for these formats (comma list of q8, q4): the "
          "checkpoint loaded with models.NAME.weights = FORMAT, teacher-forced through prefill "
          "(the GEMM path) once with the quantized GEMMs in f32 and once in bf16, then through "
          "the decode kernels (every position one decode step, and in kernel chunks of 16), "
          "with the f32 model's own decode path as the floor.");
ABSL_FLAG(std::string, simd, "best",
          "With --runtime: the SIMD targets the decode kernels are measured on (comma list of "
          "Highway names, e.g. best,avx2,sse4; base/cpu_info.h ForceSimdTarget).");
ABSL_FLAG(std::string, tmp_dir, "/tmp/qkvshare_weight_quality",
          "Where the round-tripped checkpoints are written.");

namespace qkvshare::eval {
namespace {

absl::Status Run() {
  const std::string model_dir = absl::GetFlag(FLAGS_model);
  std::string golden = absl::GetFlag(FLAGS_golden);
  if (golden.empty()) golden = model_dir + "/golden/greedy.json";
  QKV_ASSIGN_OR_RETURN(std::vector<GoldenCase> cases, LoadGoldenCases(golden));
  agents::ModelOptions options;
  options.compute_dtype = DType::kF32;
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<agents::Model> ref_model,
                       agents::Model::Load(model_dir, options));
  const agents::ModelHandle reference = std::move(ref_model);
  WeightPolicy policy;
  policy.embeddings = absl::GetFlag(FLAGS_embeddings);
  std::printf("model %s, %zu golden cases, embeddings/lm_head %s\n", model_dir.c_str(),
              cases.size(), policy.embeddings.empty() ? "as stored" : policy.embeddings.c_str());
  std::printf("| weights | bits/weight | mean KL | max KL | top-1 | positions | scheme |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- |\n");
  const std::vector<std::string> names = absl::StrSplit(absl::GetFlag(FLAGS_weights), ',');
  for (const std::string& name : names) {
    QKV_ASSIGN_OR_RETURN(WeightScheme scheme, FindWeightScheme(name));
    const std::string dir = absl::GetFlag(FLAGS_tmp_dir) + "/" + name;
    QKV_RETURN_IF_ERROR(WriteRoundTrippedCheckpoint(model_dir, dir, scheme, policy));
    QKV_ASSIGN_OR_RETURN(std::unique_ptr<agents::Model> model, agents::Model::Load(dir, options));
    QKV_ASSIGN_OR_RETURN(
        WeightQuality q,
        CompareTeacherForced(reference, agents::ModelHandle(std::move(model)), cases));
    std::printf("| %s | %.1f | %.5f | %.4f | %.2f%% | %lld | %s |\n", name.c_str(),
                scheme.bits_per_weight, q.mean_kl, q.max_kl, 100.0 * q.top1,
                static_cast<long long>(q.positions), scheme.description.c_str());
    std::fflush(stdout);
  }
  const std::string runtime = absl::GetFlag(FLAGS_runtime);
  if (runtime.empty()) return absl::OkStatus();
  std::printf(
      "\n%s\nruntime path (the checkpoint quantized at load), against the f32 model's prefill:\n"
      "  prefill: one Append per case, GEMMs over dequantized tiles in the dtype named;\n"
      "  decode steps: every position one Sequence::Decode (the decode kernels: q4 int8 "
      "activations);\n"
      "  kernel chunks of %d: the kernels' short-chunk path (short prompts, instructions).\n",
      CpuSummary().c_str(), kKernelChunkTokens);
  std::printf("| weights | path | mean KL | max KL | top-1 | positions |\n");
  std::printf("| --- | --- | --- | --- | --- | --- |\n");
  auto print_row = [](absl::string_view weights, const std::string& path, const WeightQuality& q) {
    // KL below 1e-5 (the kernels' fp32 rounding) in scientific notation.
    auto kl = [](double v, int digits) {
      return v < 1e-5 ? absl::StrFormat("%.1e", v) : absl::StrFormat("%.*f", digits, v);
    };
    std::printf("| %s | %s | %s | %s | %.2f%% | %lld |\n", std::string(weights).c_str(),
                path.c_str(), kl(q.mean_kl, 5).c_str(), kl(q.max_kl, 4).c_str(), 100.0 * q.top1,
                static_cast<long long>(q.positions));
    std::fflush(stdout);
  };
  std::vector<agents::weights::WeightFormat> formats;
  for (absl::string_view name : absl::StrSplit(runtime, ',')) {
    QKV_ASSIGN_OR_RETURN(formats.emplace_back(),
                         agents::weights::ParseWeightFormat(std::string(name)));
  }
  // The f32 model, or `format` loaded as the runtime does.
  auto load = [&](std::optional<agents::weights::WeightFormat> format,
                  DType gemm) -> absl::StatusOr<agents::ModelHandle> {
    agents::ModelOptions o;
    o.compute_dtype = DType::kF32;
    if (format.has_value()) {
      QKV_RETURN_IF_ERROR(agents::ApplyWeightFormat(*format, &o));
      o.quantized_gemm_dtype = gemm;
    }
    QKV_ASSIGN_OR_RETURN(std::unique_ptr<agents::Model> m, agents::Model::Load(model_dir, o));
    return agents::ModelHandle(std::move(m));
  };
  auto format_name = [](agents::weights::WeightFormat f) {
    return std::string(agents::weights::WeightFormatName(f));
  };
  // Prefill: libtorch's GEMMs (the Highway target does not matter).
  for (agents::weights::WeightFormat format : formats) {
    for (DType gemm : {DType::kF32, DType::kBF16}) {
      QKV_ASSIGN_OR_RETURN(agents::ModelHandle model, load(format, gemm));
      QKV_ASSIGN_OR_RETURN(WeightQuality q, CompareTeacherForced(reference, model, cases));
      print_row(format_name(format),
                absl::StrCat("prefill, ", std::string(DTypeName(gemm)), " GEMMs"), q);
    }
  }
  // The kernels, per SIMD target (models loaded after the target is forced;
  // quantized_gemm_dtype does not matter to them). The f32 rows are the
  // floor: the kernels' fp32 rounding against libtorch's.
  for (absl::string_view simd : absl::StrSplit(absl::GetFlag(FLAGS_simd), ',')) {
    QKV_RETURN_IF_ERROR(ForceSimdTarget(simd));
    const std::string target = BestSimdTargetName();
    std::vector<std::optional<agents::weights::WeightFormat>> models = {std::nullopt};
    models.insert(models.end(), formats.begin(), formats.end());
    for (const auto& format : models) {
      QKV_ASSIGN_OR_RETURN(agents::ModelHandle model, load(format, DType::kF32));
      for (ForwardPath path : {ForwardPath::kDecodeSteps, ForwardPath::kKernelChunks}) {
        QKV_ASSIGN_OR_RETURN(WeightQuality q, CompareTeacherForced(reference, model, cases, path));
        print_row(format.has_value() ? format_name(*format) : "f32",
                  absl::StrCat(ForwardPathName(path), ", ", target), q);
      }
    }
  }
  QKV_RETURN_IF_ERROR(ForceSimdTarget("best"));
  return absl::OkStatus();
}

}  // namespace
}  // namespace qkvshare::eval

int main(int argc, char** argv) {
  qkvshare::agents::ReexecWithShortOpenMpSpin(argv);
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view f) {
    return absl::EndsWith(f, "eval/weight_quality_main.cc");
  };
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage("Quality of quantized weights (docs/results.md).");
  absl::ParseCommandLine(argc, argv);
  qkvshare::agents::SetComputeThreads(1);
  const absl::Status s = qkvshare::eval::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "weight_quality: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

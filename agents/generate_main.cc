// generate: run a prompt through a model directory from the command line.
//
//   bazel run //agents:generate -- --model models/stories260K
//       --prompt "Once upon a time" --max_new_tokens 64 [--json]
//
// Plain mode prints the prompt, then streams the completion to stdout and a
// timing line to stderr. --json prints one object:
//   {"prompt_ids": [...], "generated_ids": [...], "text": prompt + completion
//    (special tokens skipped), "stopped_on": stop token id or null,
//    "stop_reason": "...", "timings": {"prefill_ms", "ttft_ms",
//    "decode_tokens_per_s", "tokens_in", "tokens_out"}}
// Temperature 0 (the default) is greedy; generation stops on the eos ids of
// generation_config.json.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agents/compute_threads.h"
#include "agents/generator.h"
#include "agents/model.h"
#include "agents/sequence.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "",
          "Model directory (HF format: config.json, *.safetensors, "
          "tokenizer.json), or a GGUF file (llama.cpp / Ollama, llama architecture).");
ABSL_FLAG(std::string, prompt, "",
          "Prompt text (the tokenizer adds BOS when it is configured to).");
ABSL_FLAG(int, max_new_tokens, 128, "Completion tokens at most.");
ABSL_FLAG(double, temperature, 0.0, "Sampling temperature; 0 = greedy.");
ABSL_FLAG(int, top_k, 0, "Top-k filter; 0 = off.");
ABSL_FLAG(double, top_p, 1.0, "Nucleus (top-p) filter in (0, 1]; 1 = off.");
ABSL_FLAG(uint64_t, seed, 0, "Sampling seed (same seed -> same tokens).");
ABSL_FLAG(std::string, dtype, "auto",
          "Compute dtype: auto (f32 for F32 weights; for 16-bit weights bf16 where the CPU "
          "has bf16 dot products, else f32 over the 16-bit weights), f32 or bf16.");
ABSL_FLAG(std::string, weights, "auto",
          "Weights: auto (as stored), q8 or q4 (quantized at load, f32 compute; "
          "docs/results.md), or f32 / bf16 (same as --dtype).");
ABSL_FLAG(int, threads, 0, "Intra-op threads; 0 = all cores.");
ABSL_FLAG(bool, json, false, "Print one JSON object instead of streaming text.");

namespace qkvshare::agents {
namespace {

absl::Status Run() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) return absl::InvalidArgumentError("--model is required");
  ModelOptions model_options;
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (dtype == "f32") {
    model_options.compute_dtype = DType::kF32;
  } else if (dtype == "bf16") {
    model_options.compute_dtype = DType::kBF16;
  } else if (dtype != "auto") {
    return absl::InvalidArgumentError("--dtype must be auto, f32 or bf16, not '" + dtype + "'");
  }
  QKV_ASSIGN_OR_RETURN(weights::WeightFormat weight_format,
                       weights::ParseWeightFormat(absl::GetFlag(FLAGS_weights)));
  if (dtype == "bf16" && (weight_format == weights::WeightFormat::kQ8 ||
                          weight_format == weights::WeightFormat::kQ4)) {
    // As daemon.yaml (docs/configuration.md): quantized weights compute in f32.
    return absl::InvalidArgumentError(
        absl::StrCat("--weights ", std::string(weights::WeightFormatName(weight_format)),
                     " computes in f32; --dtype must be auto or f32, not bf16"));
  }
  QKV_RETURN_IF_ERROR(ApplyWeightFormat(weight_format, &model_options));
  SetComputeThreads(absl::GetFlag(FLAGS_threads));
  const auto load_start = std::chrono::steady_clock::now();
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<Model> loaded, Model::Load(dir, model_options));
  const double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - load_start)
          .count();
  ModelHandle model = std::move(loaded);
  const Tokenizer* tokenizer = model->tokenizer();
  if (tokenizer == nullptr) {
    return absl::FailedPreconditionError(dir + ": no tokenizer.json; cannot encode --prompt");
  }
  QKV_ASSIGN_OR_RETURN(std::vector<int32_t> prompt_ids,
                       tokenizer->Encode(absl::GetFlag(FLAGS_prompt)));
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<Sequence> seq, Sequence::Create(model));

  GenerateOptions options;
  options.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  options.sampling.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  options.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  options.sampling.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  options.sampling.seed = absl::GetFlag(FLAGS_seed);
  const bool json = absl::GetFlag(FLAGS_json);
  if (!json) {
    std::cout << tokenizer->Decode(prompt_ids) << std::flush;
    options.on_token = [](int32_t, std::string_view piece) {
      std::cout << piece << std::flush;
      return true;
    };
  }
  QKV_ASSIGN_OR_RETURN(GenerateResult result, Generate(*seq, prompt_ids, options));
  const GenerateTimings& t = result.timings;
  if (!json) {
    std::cout << std::endl;
    std::fprintf(stderr,
                 "[%s, %s, %.1f MB resident weight copies, load %.0f ms, %d threads] "
                 "prompt %lld tokens, prefill %.1f ms, TTFT %.1f ms; "
                 "%lld tokens, decode %.1f tokens/s; stop: %s\n",
                 dir.c_str(), model->runtime_summary().c_str(), model->copied_weight_bytes() / 1e6,
                 load_ms, ComputeThreads(), static_cast<long long>(t.tokens_in), t.prefill_ms,
                 t.ttft_ms, static_cast<long long>(t.tokens_out), t.decode_tokens_per_s,
                 std::string(StopReasonName(result.stop_reason)).c_str());
    return absl::OkStatus();
  }
  std::vector<int32_t> all = prompt_ids;
  all.insert(all.end(), result.ids.begin(), result.ids.end());
  nlohmann::json out;
  out["prompt_ids"] = prompt_ids;
  out["generated_ids"] = result.ids;
  out["text"] = tokenizer->Decode(all, /*skip_special_tokens=*/true);
  out["stopped_on"] =
      result.stop_token.has_value() ? nlohmann::json(*result.stop_token) : nlohmann::json(nullptr);
  out["stop_reason"] = std::string(StopReasonName(result.stop_reason));
  out["timings"] = {{"prefill_ms", t.prefill_ms},
                    {"ttft_ms", t.ttft_ms},
                    {"decode_tokens_per_s", t.decode_tokens_per_s},
                    {"tokens_in", t.tokens_in},
                    {"tokens_out", t.tokens_out}};
  std::cout << out.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace)
            << std::endl;
  return absl::OkStatus();
}

}  // namespace
}  // namespace qkvshare::agents

int main(int argc, char** argv) {
  qkvshare::agents::ReexecWithShortOpenMpSpin(argv);
  // --help lists this file's flags (absl matches files named after the binary).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view f) {
    return absl::EndsWith(f, "agents/generate_main.cc");
  };
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "Generates a completion: generate --model DIR --prompt TEXT [--max_new_tokens N] "
      "[--temperature T --top_k K --top_p P --seed S] [--dtype auto|f32|bf16] [--weights "
      "auto|q8|q4] [--threads N] "
      "[--json]");
  absl::ParseCommandLine(argc, argv);
  absl::Status status = qkvshare::agents::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "generate: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}

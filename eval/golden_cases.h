// File: eval/golden_cases.h
// -----------------------------------------------------------------------------
// The golden greedy runs of a bundled model (models/<name>/golden/greedy.json,
// produced by llama2.c run.c, see models/stories260K/README.md) as token-id
// sequences for the fidelity evaluation: each case is the prompt ids followed
// by the golden greedy continuation, i.e. what the full-precision model
// produces from that prompt.
//
// Thread safety: pure functions.
//
// Example:
//   QKV_ASSIGN_OR_RETURN(std::vector<GoldenCase> cases,
//                        LoadGoldenCases("models/stories260K/golden/greedy.json"));
//   absl::Span<const int32_t> context = absl::MakeSpan(cases[0].ids).first(128);
#ifndef QKVSHARE_EVAL_GOLDEN_CASES_H_
#define QKVSHARE_EVAL_GOLDEN_CASES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qkvshare::eval {

struct GoldenCase {
  // Index in the file's "cases" array.
  int index = 0;
  // The prompt text ("" for the BOS-only case).
  std::string prompt;
  // Prompt ids (BOS first) then the golden generated ids.
  std::vector<int32_t> ids;
  // Number of prompt ids at the front of `ids`.
  int64_t prompt_tokens = 0;
};

// Reads every case of a greedy.json file (keys "cases"[i].prompt,
// .prompt_ids, .generated_ids). Errors: NotFound when the file cannot be
// read; InvalidArgument for malformed JSON or a missing / mistyped key
// (naming the case index and key).
absl::StatusOr<std::vector<GoldenCase>> LoadGoldenCases(const std::string& path);

}  // namespace qkvshare::eval

#endif  // QKVSHARE_EVAL_GOLDEN_CASES_H_

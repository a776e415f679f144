// File: agents/generator.h
// -----------------------------------------------------------------------------
// Text generation on a Sequence: prefill the prompt, then sample/decode token
// by token until a stop token, a stop string, max_new_tokens, the context
// limit or cancellation by the streaming callback. Torch-free (uses the
// Sequence API, Sampler and the model's Tokenizer).
//
// Semantics:
//   - The prompt ids are appended after the sequence's current contents
//     (multi-turn); an empty prompt on a non-empty sequence re-runs its last
//     token (one decode step) to get next-token logits, e.g. after a KV cache
//     injection. Empty prompt on an empty sequence: InvalidArgument.
//   - A sampled stop token ends generation and is NOT part of the output
//     (nor fed to the cache). The last generated token is not fed to the
//     cache either unless feed_final_token is set (a hop's card must hold it:
//     the next agent continues from the whole context).
//   - Stop strings are matched on the detokenized completion; the text ends
//     before the match (the ids keep the tokens that produced it). Streamed
//     text never includes any part of a stop string: text that may start one
//     is held back until it is decided.
//   - Streaming: on_token(id, text) is called once per generated token with
//     the text that became final with it (may be empty: incomplete UTF-8 or
//     stop-string lookahead); a last call with id == kFlushId delivers the
//     rest at the end, when non-empty. Returning false cancels generation
//     after that token (stop reason kCancelled).
//
// Thread safety: as the Sequence (one thread at a time).
//
// Example:
//   GenerateOptions opts;
//   opts.max_new_tokens = 64;
//   opts.on_token = [](int32_t id, std::string_view piece) {
//     std::cout << piece << std::flush;
//     return true;
//   };
//   QKV_ASSIGN_OR_RETURN(GenerateResult r, Generate(*seq, prompt_ids, opts));
#ifndef QKVSHARE_AGENTS_GENERATOR_H_
#define QKVSHARE_AGENTS_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "agents/sampler.h"
#include "agents/sequence.h"

namespace qkvshare::agents {

// Streaming callback: (token id or kFlushId, text piece) -> continue?
using TokenCallback = std::function<bool(int32_t id, std::string_view text)>;
inline constexpr int32_t kFlushId = -1;

struct GenerateOptions {
  SamplingParams sampling;  // default: greedy
  // Completion tokens at most (stop tokens not counted); >= 0.
  int max_new_tokens = 256;
  // Token ids that end generation; nullopt: the model's generation_config.json
  // eos ids (ModelConfig::generation.eos_token_ids).
  std::optional<std::vector<int32_t>> stop_token_ids;
  // Strings that end generation (non-empty; need a tokenizer).
  std::vector<std::string> stop_strings;
  // Detokenize with special tokens skipped (as HF skip_special_tokens).
  bool skip_special_tokens = true;
  // Append the last generated (non-stop) token to the KV cache, without
  // logits, before returning.
  bool feed_final_token = false;
  // Optional streaming callback.
  TokenCallback on_token;
};

enum class StopReason {
  kStopToken,     // sampled one of stop_token_ids
  kStopString,    // the completion text reached a stop string
  kMaxNewTokens,  // generated max_new_tokens
  kContextFull,   // the sequence reached its max_tokens
  kCancelled,     // on_token returned false
};

// "stop_token", "stop_string", "max_new_tokens", "context_full", "cancelled".
std::string_view StopReasonName(StopReason reason);

struct GenerateTimings {
  double prefill_ms = 0;  // Append(prompt) (incl. its last-position logits)
  double ttft_ms = 0;     // call start -> first completion token sampled
  double decode_ms = 0;   // first token sampled -> last token sampled
  // Decode steps (single-token forwards) per second of decode_ms; 0 when
  // there were none.
  double decode_tokens_per_s = 0;
  int64_t tokens_in = 0;   // prompt ids
  int64_t tokens_out = 0;  // generated ids (without the stop token)
};

struct GenerateResult {
  std::vector<int32_t> ids;  // completion ids
  std::string text;          // completion text (empty without tokenizer)
  StopReason stop_reason = StopReason::kMaxNewTokens;
  std::optional<int32_t> stop_token;  // set for kStopToken
  GenerateTimings timings;
};

// Generates a completion of `prompt_ids` on `seq`. Errors: InvalidArgument
// for bad options (sampling params, empty stop string, stop strings without a
// tokenizer, negative max_new_tokens) or an empty prompt on an empty
// sequence; the Sequence's errors for the prompt (bad token id, OutOfRange
// beyond the context limit). On error during decoding, the sequence keeps
// the tokens fed so far.
absl::StatusOr<GenerateResult> Generate(Sequence& seq, absl::Span<const int32_t> prompt_ids,
                                        const GenerateOptions& options);

}  // namespace qkvshare::agents

#endif  // QKVSHARE_AGENTS_GENERATOR_H_

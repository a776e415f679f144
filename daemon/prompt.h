// File: daemon/prompt.h
// -----------------------------------------------------------------------------
// Bounded prompt work for client-supplied text. A hop instruction may repeat
// {input} and {previous}, and an agent's prompt_template may repeat
// {instruction}: expanding first and checking afterwards lets a ~1 MB request
// build gigabytes. These helpers size the expansion arithmetically before
// anything is built, and tokenize long text in growing prefixes so that the
// work done for an over-long prompt is bounded by the context limit, not by
// the text, and can be cancelled between prefixes.
//
// Thread safety: stateless functions, safe from any thread.
#ifndef QKVSHARE_DAEMON_PROMPT_H_
#define QKVSHARE_DAEMON_PROMPT_H_

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agents/tokenizer/tokenizer.h"

namespace qkvshare::daemon {

// Bytes of prompt_template with every {instruction} replaced by
// `instruction` with its {input}, {previous} and {hop} expanded (the result
// of ExpandInstruction), computed without building it. Saturates at
// INT64_MAX.
int64_t ExpandedPromptBytes(std::string_view prompt_template, std::string_view instruction,
                            int64_t input_bytes, int64_t previous_bytes, int hop_number);

// OK when the text substituted for {input} and {previous} in the expanded
// prompt (ExpandedPromptBytes minus the template's and instruction's own
// bytes) is at most `max_bytes` (limits.max_input_bytes): an input of the
// full limit fits once, not sixteen times. Else InvalidArgument "<where>:
// the prompt would hold N bytes of substituted text ({input} x a of .. bytes,
// {previous} x b of .. bytes); limits.max_input_bytes is M".
absl::Status CheckExpandedPromptBytes(std::string_view prompt_template,
                                      std::string_view instruction, int64_t input_bytes,
                                      int64_t previous_bytes, int hop_number, int64_t max_bytes,
                                      absl::string_view where);

// Tokenizer::Encode of `text`, stopping early once it is known to need more
// than `max_tokens` tokens: prefixes of 8 * max_tokens bytes, then doubling,
// are encoded until one covers the text or yields more than max_tokens ids.
// `check_stop` (may be empty) is called between prefixes; a non-OK status is
// returned as is (Cancelled, DeadlineExceeded).
// Errors: OutOfRange "more than <max_tokens> tokens (the first <n> bytes of
// <size> are <k> tokens)"; the tokenizer's (InvalidArgument for bad UTF-8).
absl::StatusOr<std::vector<int32_t>> EncodeBounded(
    const agents::Tokenizer& tokenizer, std::string_view text, bool add_special_tokens,
    int64_t max_tokens, const std::function<absl::Status()>& check_stop = nullptr);

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_PROMPT_H_

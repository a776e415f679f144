#include "daemon/prompt.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace qkvshare::daemon {

namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

// Non-overlapping occurrences of `pattern` in `text` (as StrReplaceAll
// counts them: the placeholders cannot overlap one another).
int64_t Count(std::string_view text, std::string_view pattern) {
  int64_t n = 0;
  for (size_t pos = text.find(pattern); pos != std::string_view::npos;
       pos = text.find(pattern, pos + pattern.size())) {
    ++n;
  }
  return n;
}

// a + n * b, saturating; all arguments >= 0.
int64_t AddTimes(int64_t a, int64_t n, int64_t b) {
  if (n != 0 && b > (kMax - a) / n) return kMax;
  return a + n * b;
}

struct Expansion {
  int64_t inputs = 0, previous = 0, hops = 0, instructions = 0;
  int64_t bytes = 0;
};

Expansion Expand(std::string_view prompt_template, std::string_view instruction,
                 int64_t input_bytes, int64_t previous_bytes, int hop_number) {
  Expansion e;
  e.inputs = Count(instruction, "{input}");
  e.previous = Count(instruction, "{previous}");
  e.hops = Count(instruction, "{hop}");
  e.instructions = Count(prompt_template, "{instruction}");
  const int64_t hop_digits = static_cast<int64_t>(absl::StrCat(hop_number).size());
  int64_t inst =
      static_cast<int64_t>(instruction.size()) - e.inputs * 7 - e.previous * 10 - e.hops * 5;
  inst = AddTimes(inst, e.inputs, input_bytes);
  inst = AddTimes(inst, e.previous, previous_bytes);
  inst = AddTimes(inst, e.hops, hop_digits);
  e.bytes = AddTimes(static_cast<int64_t>(prompt_template.size()) - e.instructions * 13,
                     e.instructions, inst);
  return e;
}

// Largest n <= max such that text[0, n) ends on a UTF-8 character boundary.
size_t Utf8Prefix(std::string_view text, size_t max) {
  if (max >= text.size()) return text.size();
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return n;
}

}  // namespace

int64_t ExpandedPromptBytes(std::string_view prompt_template, std::string_view instruction,
                            int64_t input_bytes, int64_t previous_bytes, int hop_number) {
  return Expand(prompt_template, instruction, input_bytes, previous_bytes, hop_number).bytes;
}

absl::Status CheckExpandedPromptBytes(std::string_view prompt_template,
                                      std::string_view instruction, int64_t input_bytes,
                                      int64_t previous_bytes, int hop_number, int64_t max_bytes,
                                      absl::string_view where) {
  const Expansion e = Expand(prompt_template, instruction, input_bytes, previous_bytes, hop_number);
  const int64_t fixed = Expand(prompt_template, instruction, 0, 0, hop_number).bytes;
  if (e.bytes - fixed <= max_bytes) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": the prompt would hold ",
                   e.bytes == kMax ? std::string("more than 2^63") : absl::StrCat(e.bytes - fixed),
                   " bytes of substituted text ({input} x", e.inputs * e.instructions, " of ",
                   input_bytes, " bytes, {previous} x", e.previous * e.instructions, " of ",
                   previous_bytes, " bytes); limits.max_input_bytes is ", max_bytes));
}

absl::StatusOr<std::vector<int32_t>> EncodeBounded(
    const agents::Tokenizer& tokenizer, std::string_view text, bool add_special_tokens,
    int64_t max_tokens, const std::function<absl::Status()>& check_stop) {
  size_t budget = static_cast<size_t>(std::max<int64_t>(max_tokens, 1)) * 8;
  while (true) {
    if (check_stop) {
      if (absl::Status s = check_stop(); !s.ok()) return s;
    }
    const size_t n = Utf8Prefix(text, budget);
    absl::StatusOr<std::vector<int32_t>> ids =
        tokenizer.Encode(text.substr(0, n), add_special_tokens);
    if (!ids.ok()) return ids.status();
    if (n == text.size()) return ids;
    if (static_cast<int64_t>(ids->size()) > max_tokens) {
      return absl::OutOfRangeError(absl::StrCat("more than ", max_tokens, " tokens (the first ", n,
                                                " bytes of ", text.size(), " are ", ids->size(),
                                                " tokens)"));
    }
    budget = budget > text.size() / 2 ? text.size() : budget * 2;
  }
}

}  // namespace qkvshare::daemon

// File: agents/tokenizer/pattern.h
// -----------------------------------------------------------------------------
// Patterns of tokenizer.json (internal): a literal {"String": ...} or a
// regular expression {"Regex": ...}, and the Split delimiter behaviours of the
// Hugging Face tokenizers library (SplitDelimiterBehavior).
//
// Regular expressions run on PCRE2 with PCRE2_UTF | PCRE2_UCP (so \s, \w,
// \p{L}, \p{N} are Unicode-aware), JIT-compiled when the platform allows.
// The tokenizers library uses Oniguruma; the patterns real tokenizers ship
// (GPT-2, Llama-3, Qwen2 pre-tokenizer regexes) mean the same in both.
//
// Thread safety: immutable after creation; all methods are const and safe to
// call concurrently (match data is per call).
#ifndef QKVSHARE_AGENTS_TOKENIZER_PATTERN_H_
#define QKVSHARE_AGENTS_TOKENIZER_PATTERN_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agents/tokenizer/json_util.h"

struct pcre2_real_code_8;

namespace qkvshare::agents::tokenizer_internal {

// A byte range [first, second) of a string.
using ByteRange = std::pair<size_t, size_t>;

// A compiled regular expression.
class Regex {
 public:
  // Errors: InvalidArgument with PCRE2's message and offset.
  static absl::StatusOr<std::unique_ptr<Regex>> Create(std::string_view pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the non-empty, non-overlapping matches in `text` (valid UTF-8),
  // left to right. Errors: Internal when PCRE2 gives up (resource limits).
  absl::Status FindAll(std::string_view text, std::vector<ByteRange>* matches) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex(std::string pattern, pcre2_real_code_8* code) : pattern_(std::move(pattern)), code_(code) {}
  std::string pattern_;
  pcre2_real_code_8* code_;  // owned
};

// What a split does with the matched delimiters.
enum class SplitBehavior {
  kRemoved,             // drop the delimiters
  kIsolated,            // keep each delimiter as its own piece
  kMergedWithPrevious,  // append a delimiter to the piece before it
  kMergedWithNext,      // prepend a delimiter to the piece after it
  kContiguous,          // keep delimiters, adjacent ones merged into one piece
};

// "Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous".
absl::StatusOr<SplitBehavior> ParseSplitBehavior(const Json& value, const JsonPath& where);

// A literal or a regular expression.
class Pattern {
 public:
  // {"String": "..."} or {"Regex": "..."}.
  static absl::StatusOr<std::unique_ptr<Pattern>> FromJson(const Json& value,
                                                           const JsonPath& where);
  static std::unique_ptr<Pattern> Literal(std::string literal);
  static absl::StatusOr<std::unique_ptr<Pattern>> FromRegex(std::string_view regex);

  // Appends the non-empty, non-overlapping matches in `text`, left to right.
  absl::Status FindAll(std::string_view text, std::vector<ByteRange>* matches) const;

  // `text` with every match replaced by `content` (taken literally).
  absl::StatusOr<std::string> ReplaceAll(std::string_view text, std::string_view content) const;

  // Splits `text` at the matches (at the non-matches when `invert`) and
  // appends the kept, non-empty pieces as byte ranges, in order. This is
  // NormalizedString::split of the tokenizers library.
  absl::Status Split(std::string_view text, SplitBehavior behavior, bool invert,
                     std::vector<ByteRange>* pieces) const;

 private:
  Pattern() = default;
  std::string literal_;  // used when regex_ is null
  std::unique_ptr<Regex> regex_;
};

}  // namespace qkvshare::agents::tokenizer_internal

#endif  // QKVSHARE_AGENTS_TOKENIZER_PATTERN_H_

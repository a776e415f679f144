// File: agents/tokenizer/pre_tokenizer.h
// -----------------------------------------------------------------------------
// tokenizer.json "pre_tokenizer" (internal): cuts normalized text into the
// "words" the BPE model encodes one by one (merges never cross a word).
//
// Supported "type"s (Hugging Face tokenizers semantics):
//   ByteLevel{add_prefix_space, use_regex}   GPT-2 regex split (when use_regex)
//                                            then bytes -> byte-level characters
//   Split{pattern, behavior, invert}         String or Regex (PCRE2) pattern
//   Metaspace{replacement, prepend_scheme    ' ' -> "▁"; prepend "▁" always, on the
//             (first|always|never) or          first piece of the text only, or
//             add_prefix_space, split}         never; split before each "▁"
//   Digits{individual_digits}                digits isolated (or runs of digits)
//   Whitespace, WhitespaceSplit, Punctuation{behavior}
//   Sequence{pretokenizers}
// Others (BertPreTokenizer, UnicodeScripts, CharDelimiterSplit, ...) are
// rejected with InvalidArgument naming the key. `trim_offsets` is accepted
// and ignored (offsets are not reported).
//
// Thread safety: immutable after creation; PreTokenize() is const and safe to
// call concurrently.
#ifndef QKVSHARE_AGENTS_TOKENIZER_PRE_TOKENIZER_H_
#define QKVSHARE_AGENTS_TOKENIZER_PRE_TOKENIZER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agents/tokenizer/json_util.h"

namespace qkvshare::agents::tokenizer_internal {

// One piece of text on its way to the model.
struct PreToken {
  std::string text;
  // True when the piece begins at byte 0 of the text given to Encode (what
  // Metaspace's prepend_scheme "first" looks at).
  bool at_text_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;

  // Replaces *pieces (non-empty, valid UTF-8) by their split, in order; empty
  // pieces are dropped. Errors: Internal when a regex fails.
  virtual absl::Status PreTokenize(std::vector<PreToken>* pieces) const = 0;

  // Builds the pre-tokenizer described by `value` (a JSON object with "type").
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> FromJson(const Json& value,
                                                                const JsonPath& where);
};

// The regex GPT-2 (and the ByteLevel pre-tokenizer with use_regex) splits with.
inline constexpr char kGpt2SplitRegex[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace qkvshare::agents::tokenizer_internal

#endif  // QKVSHARE_AGENTS_TOKENIZER_PRE_TOKENIZER_H_

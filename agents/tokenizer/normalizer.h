// File: agents/tokenizer/normalizer.h
// -----------------------------------------------------------------------------
// tokenizer.json "normalizer" (internal): rewrites each piece of input text
// that is not an added token before pre-tokenization.
//
// Supported "type"s (Hugging Face tokenizers semantics):
//   Sequence{normalizers}            apply in order
//   Prepend{prepend}                 prefix a non-empty text (Llama-2 "▁")
//   Replace{pattern, content}        pattern {"String"} or {"Regex"} (PCRE2)
//   NFC, NFD, NFKC, NFKD             Unicode normalization forms (ICU)
//   Lowercase                        Unicode full lowercase (ICU, root locale)
//   Strip{strip_left, strip_right}   trim Unicode white space
//   StripAccents                     drop non-spacing marks (category Mn)
// Anything else (BertNormalizer, Precompiled, NMT, ...) is rejected with
// InvalidArgument naming the key.
//
// Thread safety: immutable after creation; Normalize() is const and safe to
// call concurrently.
#ifndef QKVSHARE_AGENTS_TOKENIZER_NORMALIZER_H_
#define QKVSHARE_AGENTS_TOKENIZER_NORMALIZER_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agents/tokenizer/json_util.h"

namespace qkvshare::agents::tokenizer_internal {

class Normalizer {
 public:
  virtual ~Normalizer() = default;

  // Rewrites *text (valid UTF-8) in place; the result is valid UTF-8.
  // Errors: Internal when a regex or ICU call fails.
  virtual absl::Status Normalize(std::string* text) const = 0;

  // Builds the normalizer described by `value` (a JSON object with "type").
  static absl::StatusOr<std::unique_ptr<Normalizer>> FromJson(const Json& value,
                                                              const JsonPath& where);
};

}  // namespace qkvshare::agents::tokenizer_internal

#endif  // QKVSHARE_AGENTS_TOKENIZER_NORMALIZER_H_

// File: agents/tokenizer/post_processor.h
// -----------------------------------------------------------------------------
// tokenizer.json "post_processor" (internal), single-sequence form only: the
// special tokens wrapped around the encoded text when Encode() is called with
// add_special_tokens.
//
// Supported "type"s:
//   TemplateProcessing{single, special_tokens}  e.g. single = [<s>, $A]
//   RobertaProcessing{cls, sep}, BertProcessing{cls, sep}   cls $A sep
//   ByteLevel                                   adds nothing (offsets only)
//   Sequence{processors}                        applied in order
// Others are rejected with InvalidArgument naming the key. The "pair"
// templates are not used (Encode takes one sequence).
//
// Thread safety: immutable after creation.
#ifndef QKVSHARE_AGENTS_TOKENIZER_POST_PROCESSOR_H_
#define QKVSHARE_AGENTS_TOKENIZER_POST_PROCESSOR_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agents/tokenizer/json_util.h"

namespace qkvshare::agents::tokenizer_internal {

class PostProcessor {
 public:
  // `value` is the "post_processor" JSON (nullptr for null: adds nothing).
  static absl::StatusOr<std::unique_ptr<PostProcessor>> FromJson(const Json* value,
                                                                 const JsonPath& where);

  // Returns the template applied to `ids` (the encoded text).
  std::vector<int32_t> Apply(const std::vector<int32_t>& ids) const;

  // The first id of the template when it starts with a special token (the
  // BOS: <s>, <|begin_of_text|>), else nullopt.
  std::optional<int32_t> bos_id() const;

 private:
  // One template item: special-token ids, or the sequence ($A) when empty.
  struct Item {
    std::vector<int32_t> ids;
    bool is_sequence = false;
  };

  PostProcessor() : items_{Item{{}, true}} {}
  absl::Status Add(const Json& value, const JsonPath& where);
  // Wraps the current template: `outer` with its $A replaced by items_.
  void Wrap(std::vector<Item> outer);

  std::vector<Item> items_;
};

}  // namespace qkvshare::agents::tokenizer_internal

#endif  // QKVSHARE_AGENTS_TOKENIZER_POST_PROCESSOR_H_

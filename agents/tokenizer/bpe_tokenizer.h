// File: agents/tokenizer/bpe_tokenizer.h
// -----------------------------------------------------------------------------
// BpeTokenizer (internal to //agents/tokenizer:tokenizer): the Tokenizer that
// Tokenizer::FromFile/FromJson build. It runs the tokenizers-library pipeline
//   added tokens (raw) -> normalizer -> added tokens (normalized)
//   -> pre-tokenizer -> BPE model -> post-processor
// for Encode, and token strings -> decoder for Decode.
//
// Lifecycle: built once by Create(); immutable afterwards.
// Thread safety: all const methods are safe to call concurrently (the BPE
// word cache is internally locked). An IdDecodeStream is per sequence.
#ifndef QKVSHARE_AGENTS_TOKENIZER_BPE_TOKENIZER_H_
#define QKVSHARE_AGENTS_TOKENIZER_BPE_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "agents/tokenizer/added_vocabulary.h"
#include "agents/tokenizer/bpe_model.h"
#include "agents/tokenizer/decoder.h"
#include "agents/tokenizer/normalizer.h"
#include "agents/tokenizer/post_processor.h"
#include "agents/tokenizer/pre_tokenizer.h"
#include "agents/tokenizer/tokenizer.h"

namespace qkvshare::agents::tokenizer_internal {

// Incremental id -> text decoding behind StreamingDetokenizer.
class IdDecodeStream {
 public:
  virtual ~IdDecodeStream() = default;
  // Appends the text completed by `id` to *out.
  virtual void Push(int32_t id, std::string* out) = 0;
  // Appends whatever is still held; no Push() may follow.
  virtual void Flush(std::string* out) = 0;
};

class BpeTokenizer final : public Tokenizer {
 public:
  // The components of a tokenizer.json. model, added, post_processor and
  // decoder are required; normalizer and pre_tokenizer may be null.
  struct Parts {
    std::unique_ptr<Normalizer> normalizer;
    std::unique_ptr<PreTokenizer> pre_tokenizer;
    std::unique_ptr<BpeModel> model;
    std::unique_ptr<AddedVocabulary> added;
    std::unique_ptr<PostProcessor> post_processor;
    std::unique_ptr<Decoder> decoder;
  };
  // Errors: InvalidArgument when a required part is missing.
  static absl::StatusOr<std::unique_ptr<BpeTokenizer>> Create(Parts parts);

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                              bool add_special_tokens) const override;
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const override;
  int32_t vocab_size() const override;
  std::optional<int32_t> TokenToId(std::string_view token) const override;
  std::string IdToToken(int32_t id) const override;
  bool IsSpecial(int32_t id) const override;
  std::optional<int32_t> bos_id() const override;

  // A stream that decodes ids one by one, exactly as Decode() would decode
  // them all at once; O(token length) per id.
  std::unique_ptr<IdDecodeStream> NewDecodeStream(bool skip_special_tokens) const;

 private:
  class Stream;
  explicit BpeTokenizer(Parts parts) : parts_(std::move(parts)) {}
  // The token string of `id` (added tokens first, then the vocab), or nullptr.
  const std::string* TokenString(int32_t id) const;
  // Encodes one piece of normalized text that holds no added token.
  absl::Status EncodePiece(std::string text, bool at_text_start, std::vector<int32_t>* ids) const;

  Parts parts_;
};

}  // namespace qkvshare::agents::tokenizer_internal

#endif  // QKVSHARE_AGENTS_TOKENIZER_BPE_TOKENIZER_H_

// File: agents/tokenizer/tokenizer.h
// -----------------------------------------------------------------------------
// Tokenizer: a Hugging Face `tokenizer.json` (tokenizers library format) BPE
// tokenizer in its two common flavours:
//   - SentencePiece-style BPE with byte_fallback and the "▁" normalizer
//     (Llama-2, Mistral, TinyLlama, the bundled stories260K);
//   - byte-level BPE with a regex pre-tokenizer (GPT-2, Llama-3, Qwen2,
//     SmolLM); the Unicode regex runs on PCRE2.
// Added/special tokens are matched in the input text before the model runs;
// the post-processor's BOS (TemplateProcessing) is honoured.
//
// Lifecycle: immutable after FromFile(). Thread safety: all const methods are
// safe to call concurrently. StreamingDetokenizer is per-sequence, not shared.
//
// Example:
//   QKV_ASSIGN_OR_RETURN(auto tok, Tokenizer::FromFile(dir + "/tokenizer.json"));
//   QKV_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok->Encode("Once upon a time"));
//   std::string text = tok->Decode(ids);   // "Once upon a time"
#ifndef QKVSHARE_AGENTS_TOKENIZER_TOKENIZER_H_
#define QKVSHARE_AGENTS_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace qkvshare::agents {

namespace tokenizer_internal {
class IdDecodeStream;
}  // namespace tokenizer_internal

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Loads `path` (a tokenizer.json). Errors: NotFound when the file is
  // missing; InvalidArgument naming the file and the offending JSON key for
  // malformed or unsupported content (e.g. a model type other than BPE).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  // Same, from the JSON text; `origin` names the source in error messages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json,
                                                             std::string_view origin);

  // Token ids of `text`. With add_special_tokens, the post-processor's
  // template is applied (BOS for Llama-style tokenizers). Errors:
  // InvalidArgument for text that is not valid UTF-8, or with a character
  // the model has no token for (no byte fallback and no unk token).
  virtual absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text,
                                                      bool add_special_tokens = true) const = 0;

  // Text of `ids` through the tokenizer.json decoder. With skip_special_tokens,
  // special tokens (e.g. <s>) produce no text. Ids outside the vocabulary
  // produce no text. Invalid UTF-8 from byte tokens becomes U+FFFD.
  virtual std::string Decode(absl::Span<const int32_t> ids,
                             bool skip_special_tokens = true) const = 0;

  // Size of the id space (model vocab plus added tokens): ids are < this.
  virtual int32_t vocab_size() const = 0;
  // Id of a token string (vocab or added token), if any.
  virtual std::optional<int32_t> TokenToId(std::string_view token) const = 0;
  // Piece string of an id ("▁time", "<0x0A>", "<s>"); empty when out of range.
  virtual std::string IdToToken(int32_t id) const = 0;
  // True for added tokens marked special (<s>, </s>, <|eot_id|>, ...).
  virtual bool IsSpecial(int32_t id) const = 0;
  // The BOS id the post-processor adds, if it adds one.
  virtual std::optional<int32_t> bos_id() const = 0;
};

// Turns a stream of ids into text incrementally, never emitting half a UTF-8
// character: bytes of an incomplete character (byte-fallback or byte-level
// pieces) are held until the character completes. Concatenating every Push()
// and the final Flush() gives Decode(all ids).
//
// Cost: for a tokenizer from FromFile()/FromJson(), each Push() costs
// O(length of the token), independent of how many ids came before (the
// decoder's state is carried, nothing is re-decoded). For any other Tokenizer
// implementation (e.g. a test fake) it falls back to re-decoding all ids on
// every Push() and holding back a trailing U+FFFD (best effort).
//
// Thread safety: one object per sequence, not shared.
class StreamingDetokenizer {
 public:
  // `tokenizer` must outlive this object. `prefix` are ids already decoded
  // (e.g. the prompt): they set the decoder's context (the leading-space rule)
  // and produce no text. If the prefix ends inside a character, the whole
  // character is emitted by the Push() that completes it.
  explicit StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = true,
                                absl::Span<const int32_t> prefix = {});
  ~StreamingDetokenizer();
  // A moved-from detokenizer may only be destroyed or assigned to.
  StreamingDetokenizer(StreamingDetokenizer&&) noexcept;
  StreamingDetokenizer& operator=(StreamingDetokenizer&&) noexcept;

  // Text that became complete with `id` (may be empty).
  std::string Push(int32_t id);
  // Whatever is still held (an incomplete character becomes U+FFFD). Call
  // once, at the end of the sequence.
  std::string Flush();

 private:
  std::unique_ptr<tokenizer_internal::IdDecodeStream> stream_;
};

}  // namespace qkvshare::agents

#endif  // QKVSHARE_AGENTS_TOKENIZER_TOKENIZER_H_

// File: agents/tokenizer/decoder.h
// -----------------------------------------------------------------------------
// tokenizer.json "decoder" (internal), in a form that decodes incrementally.
//
// A supported decoder chain is split into
//   1. per-token steps, applied to each token string on its own:
//        Replace{pattern: {"String"}, content}   e.g. "▁" -> " "
//        ByteFallback                            "<0xE2>" -> the byte 0xE2
//        ByteLevel                               byte-level characters -> bytes
//        Metaspace{replacement, prepend_scheme}  "▁" -> " ", dropped in the
//                                                first token unless "never"
//        Strip{content, start, stop}             (before any Fuse: per token)
//   2. the concatenation of all token bytes, converted to UTF-8 lossily (each
//      ill-formed subpart -> one U+FFFD);
//   3. after Fuse (or ByteLevel, which fuses): Strip{content, start, stop} on
//      the whole text (Llama-2: drop one leading space).
// With no decoder (JSON null) tokens are joined with " ", like the tokenizers
// library. Chains this form cannot express exactly (Replace/Metaspace/Strip
// after ByteFallback on unfused tokens, anything but Strip after Fuse, Regex
// patterns) and the WordPiece, BPEDecoder and CTC decoders are rejected with
// InvalidArgument naming the key.
//
// Differences from the tokenizers library, both only for ill-formed byte
// sequences: it turns a whole run of byte-fallback pieces into one U+FFFD per
// byte when any of them is ill-formed; here each maximal ill-formed subpart
// becomes one U+FFFD (as its ByteLevel decoder does). That keeps decoding
// local, which DecodeStream needs.
//
// Thread safety: Decoder is immutable and const; a DecodeStream is one
// sequence's state and is not shared.
#ifndef QKVSHARE_AGENTS_TOKENIZER_DECODER_H_
#define QKVSHARE_AGENTS_TOKENIZER_DECODER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "agents/tokenizer/json_util.h"
#include "agents/tokenizer/utf8.h"

namespace qkvshare::agents::tokenizer_internal {

class Decoder {
 public:
  // `value` is the "decoder" JSON (nullptr for null).
  static absl::StatusOr<std::unique_ptr<Decoder>> FromJson(const Json* value,
                                                           const JsonPath& where);

  // Appends the bytes `token` contributes (stage 1) to *out; `first_token` is
  // true for the first token of the decoded sequence.
  void AppendTokenBytes(std::string_view token, bool first_token, std::string* out) const;

 private:
  // One per-token step (stage 1).
  struct Step {
    enum class Kind { kReplace, kByteFallback, kByteLevel, kMetaspace, kStrip };
    Kind kind;
    std::string from;                  // kReplace: literal to replace; kMetaspace: replacement
    std::string to;                    // kReplace: replacement text; kStrip: content
    bool drop_in_first_token = false;  // kMetaspace: prepend_scheme != never
    int64_t start = 0;                 // kStrip
    int64_t stop = 0;                  // kStrip
  };

  friend class DecodeStream;
  Decoder() = default;
  absl::Status Add(const Json& value, const JsonPath& where);

  std::vector<Step> steps_;
  bool join_with_space_ = false;  // no decoder: " " between tokens
  bool fused_ = false;            // a Fuse or ByteLevel was seen
  bool after_byte_fallback_ = false;
  // Stage 3: strip up to strip_start_ leading / strip_stop_ trailing
  // `strip_content_` characters of the whole text.
  std::string strip_content_;
  int64_t strip_start_ = 0;
  int64_t strip_stop_ = 0;
};

// Turns a stream of token strings into text, emitting each character as soon
// as it is complete. Push()es followed by Flush() produce exactly the decoded
// text of all tokens; the cost of Push is O(token length), independent of
// how many tokens came before.
class DecodeStream {
 public:
  // `decoder` must outlive the stream.
  explicit DecodeStream(const Decoder& decoder);

  // Appends the text completed by `token` to *out.
  void Push(std::string_view token, std::string* out);
  // Appends the rest (an incomplete character becomes U+FFFD; trailing strip
  // characters are dropped). The stream must not be used afterwards.
  void Flush(std::string* out);

 private:
  void Emit(std::string_view chars, std::string* out);

  const Decoder& decoder_;
  int64_t tokens_ = 0;
  Utf8Assembler utf8_;
  int64_t lead_to_strip_;  // leading strip characters still to drop
  std::string held_tail_;  // trailing strip characters held back
  int64_t held_count_ = 0;
  std::string bytes_;  // scratch
  std::string chars_;  // scratch
};

}  // namespace qkvshare::agents::tokenizer_internal

#endif  // QKVSHARE_AGENTS_TOKENIZER_DECODER_H_

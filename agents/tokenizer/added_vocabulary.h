// File: agents/tokenizer/added_vocabulary.h
// -----------------------------------------------------------------------------
// The "added_tokens" of a tokenizer.json (internal): tokens matched in the
// text before the BPE model runs (<s>, <|eot_id|>, <|im_start|>, user-added
// words), as the Hugging Face tokenizers AddedVocabulary does:
//   - tokens with normalized=false are found in the raw input, tokens with
//     normalized=true in the normalized pieces (their content normalized by
//     the same normalizer);
//   - matching is leftmost-longest, non-overlapping;
//   - single_word: a match touching a word character (\w: alphabetic, marks,
//     decimal digits, connector punctuation) on either side is skipped;
//   - lstrip/rstrip: white space left/right of the match is swallowed by it.
// special=true marks the token for skip_special_tokens in Decode.
//
// Thread safety: immutable after creation; all methods are const.
#ifndef QKVSHARE_AGENTS_TOKENIZER_ADDED_VOCABULARY_H_
#define QKVSHARE_AGENTS_TOKENIZER_ADDED_VOCABULARY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "agents/tokenizer/json_util.h"
#include "agents/tokenizer/normalizer.h"

namespace qkvshare::agents::tokenizer_internal {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = false;
};

// Byte-keyed trie over token contents: leftmost-longest lookups.
class TokenTrie {
 public:
  void Insert(std::string_view key, int32_t value);
  // The value of the longest key that is a prefix of `text`, its length in
  // *length; -1 when no key is.
  int32_t LongestPrefix(std::string_view text, size_t* length) const;
  bool empty() const { return values_.size() <= 1; }
  // True if some key starts with `byte`.
  bool MayStartWith(uint8_t byte) const { return first_byte_[byte]; }

 private:
  absl::flat_hash_map<uint64_t, int32_t> edges_;  // (node << 8 | byte) -> node
  std::vector<int32_t> values_{-1};               // per node; node 0 is the root
  bool first_byte_[256] = {};
};

class AddedVocabulary {
 public:
  // `added_tokens` is the JSON array (or nullptr for none). `normalizer` (may
  // be null) normalizes the content of normalized=true tokens. Errors:
  // InvalidArgument naming the key for a malformed entry.
  static absl::StatusOr<std::unique_ptr<AddedVocabulary>> FromJson(const Json* added_tokens,
                                                                   const Normalizer* normalizer,
                                                                   const JsonPath& where);

  // A piece of text: an added token (id >= 0) or plain text (id == -1).
  struct Segment {
    size_t begin;
    size_t end;
    int32_t id;
  };
  // Splits `text` (valid UTF-8) on the tokens matched before normalization
  // (SplitRaw) or after it (SplitNormalized); appends the non-empty segments.
  void SplitRaw(std::string_view text, std::vector<Segment>* out) const;
  void SplitNormalized(std::string_view text, std::vector<Segment>* out) const;
  bool has_normalized_tokens() const { return !normalized_trie_.empty(); }

  // The added token with this id, or nullptr.
  const AddedToken* FindById(int32_t id) const;
  std::optional<int32_t> TokenToId(std::string_view content) const;
  // One past the largest added id (0 when there are none).
  int32_t id_limit() const { return id_limit_; }

 private:
  AddedVocabulary() = default;
  void Split(std::string_view text, const TokenTrie& trie, std::vector<Segment>* out) const;

  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<int32_t, size_t> by_id_;  // id -> index in tokens_
  absl::flat_hash_map<std::string, int32_t> by_content_;
  TokenTrie raw_trie_;         // values: index in tokens_
  TokenTrie normalized_trie_;  // keys: normalized content
  int32_t id_limit_ = 0;
};

}  // namespace qkvshare::agents::tokenizer_internal

#endif  // QKVSHARE_AGENTS_TOKENIZER_ADDED_VOCABULARY_H_

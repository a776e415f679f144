// File: agents/tokenizer/bpe_model.h
// -----------------------------------------------------------------------------
// The BPE "model" of a tokenizer.json (internal): vocab, ranked merges and the
// options of the Hugging Face tokenizers BPE model (byte_fallback, unk_token,
// fuse_unk, ignore_merges, continuing_subword_prefix, end_of_word_suffix).
//
// Tokenize(word) starts from one symbol per character (a character missing
// from the vocab becomes its <0xXX> byte pieces with byte_fallback, else the
// unk token, runs of unknowns fused with fuse_unk), then repeatedly applies
// the lowest-ranked merge present in the word, leftmost first (rank = index in
// "merges"; a later duplicate overrides an earlier one). The merge loop keeps
// the symbols in a linked list and candidate pairs in a binary heap, so a word
// of n characters costs O(n log n) (SentencePiece-style tokenizers without a
// pre-tokenizer hand the whole text over as one word).
//
// Results for words shorter than 256 bytes are cached (up to 16384 words).
//
// Thread safety: Tokenize() is safe to call concurrently (the cache is
// guarded by a mutex); everything else is immutable after FromJson().
#ifndef QKVSHARE_AGENTS_TOKENIZER_BPE_MODEL_H_
#define QKVSHARE_AGENTS_TOKENIZER_BPE_MODEL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agents/tokenizer/json_util.h"

namespace qkvshare::agents::tokenizer_internal {

class BpeModel {
 public:
  // Builds the model from the "model" object of a tokenizer.json. Errors
  // (InvalidArgument naming the key): a type other than "BPE" (e.g. Unigram,
  // WordPiece, WordLevel), a malformed vocab or merge, a merge whose parts or
  // result are not in the vocab, dropout > 0.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const Json& model,
                                                            const JsonPath& where);

  // Appends the ids of `word` (valid UTF-8, as produced by the
  // pre-tokenizer) to *ids. Errors: InvalidArgument naming the character when
  // it is not in the vocab and there is neither byte fallback nor unk token.
  absl::Status Tokenize(std::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The vocab string of `id`, or nullptr for an id no vocab entry has.
  const std::string* IdToToken(int32_t id) const;
  // One past the largest vocab id.
  int32_t id_limit() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  struct MergeResult {
    int32_t rank;
    int32_t new_id;
  };

  BpeModel() = default;
  absl::Status ParseVocab(const Json& vocab, const JsonPath& where);
  absl::Status ParseMerges(const Json& merges, const JsonPath& where);
  // Initial symbols of `word`, before any merge.
  absl::Status InitialSymbols(std::string_view word, std::vector<int32_t>* symbols) const;
  // Applies the merges to `symbols` in place.
  void MergeAll(std::vector<int32_t>* symbols) const;
  const MergeResult* FindMerge(int32_t left, int32_t right) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_token_;                        // per id: some vocab entry has this id
  absl::flat_hash_map<uint64_t, MergeResult> merges_;  // key: left << 32 | right
  std::string unk_token_;                              // "" when the model has none
  std::optional<int32_t> unk_id_;                      // its id, when it is in the vocab
  int32_t byte_ids_[256];  // <0xXX> ids, -1 when missing; used with byte_fallback
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;

  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace qkvshare::agents::tokenizer_internal

#endif  // QKVSHARE_AGENTS_TOKENIZER_BPE_MODEL_H_

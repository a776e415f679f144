#include "agents/tokenizer/added_vocabulary.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "agents/tokenizer/string_view_compat.h"
#include "agents/tokenizer/utf8.h"
#include "base/status_macros.h"

namespace qkvshare::agents::tokenizer_internal {
namespace {

// Rust regex's \w: Alphabetic, marks, decimal digits, connector punctuation,
// Join_Control (what the tokenizers library's single_word check uses).
bool IsWordChar(char32_t cp) {
  const auto c = static_cast<UChar32>(cp);
  return u_hasBinaryProperty(c, UCHAR_ALPHABETIC) ||
         (U_GET_GC_MASK(c) & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0 ||
         u_hasBinaryProperty(c, UCHAR_JOIN_CONTROL);
}

bool IsWhiteSpace(char32_t cp) { return u_isUWhiteSpace(static_cast<UChar32>(cp)); }

}  // namespace

void TokenTrie::Insert(std::string_view key, int32_t value) {
  if (key.empty()) return;
  int32_t node = 0;
  for (char c : key) {
    const uint64_t edge = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(c);
    auto it = edges_.find(edge);
    if (it == edges_.end()) {
      values_.push_back(-1);
      it = edges_.emplace(edge, static_cast<int32_t>(values_.size() - 1)).first;
    }
    node = it->second;
  }
  values_[node] = value;
  first_byte_[static_cast<uint8_t>(key[0])] = true;
}

int32_t TokenTrie::LongestPrefix(std::string_view text, size_t* length) const {
  int32_t node = 0;
  int32_t best = -1;
  for (size_t i = 0; i < text.size(); ++i) {
    auto it = edges_.find((static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(text[i]));
    if (it == edges_.end()) break;
    node = it->second;
    if (values_[node] >= 0) {
      best = values_[node];
      *length = i + 1;
    }
  }
  return best;
}

absl::StatusOr<std::unique_ptr<AddedVocabulary>> AddedVocabulary::FromJson(
    const Json* added_tokens, const Normalizer* normalizer, const JsonPath& where) {
  std::unique_ptr<AddedVocabulary> v(new AddedVocabulary());
  if (added_tokens == nullptr) return v;
  if (!added_tokens->is_array()) return where.Error("expected an array");
  for (size_t i = 0; i < added_tokens->size(); ++i) {
    const Json& entry = (*added_tokens)[i];
    const JsonPath at = where.Index(i);
    if (!entry.is_object()) return at.Error("expected an object");
    AddedToken t;
    QKV_ASSIGN_OR_RETURN(const int64_t id, GetIntOr(entry, "id", -1, at));
    if (id < 0 || id > INT32_MAX - 1) return at.Key("id").Error("missing or out of range");
    t.id = static_cast<int32_t>(id);
    QKV_ASSIGN_OR_RETURN(t.content, GetString(entry, "content", at));
    QKV_ASSIGN_OR_RETURN(t.special, GetBoolOr(entry, "special", false, at));
    QKV_ASSIGN_OR_RETURN(t.lstrip, GetBoolOr(entry, "lstrip", false, at));
    QKV_ASSIGN_OR_RETURN(t.rstrip, GetBoolOr(entry, "rstrip", false, at));
    QKV_ASSIGN_OR_RETURN(t.single_word, GetBoolOr(entry, "single_word", false, at));
    QKV_ASSIGN_OR_RETURN(t.normalized, GetBoolOr(entry, "normalized", !t.special, at));
    if (t.content.empty()) continue;  // the tokenizers library ignores these too
    const auto index = static_cast<int32_t>(v->tokens_.size());
    if (t.normalized) {
      std::string key = t.content;
      if (normalizer != nullptr) {
        absl::Status s = normalizer->Normalize(&key);
        if (!s.ok()) return at.Key("content").Error(s.message());
      }
      v->normalized_trie_.Insert(key, index);
    } else {
      v->raw_trie_.Insert(t.content, index);
    }
    v->by_id_[t.id] = static_cast<size_t>(index);
    v->by_content_[t.content] = t.id;
    v->id_limit_ = std::max(v->id_limit_, t.id + 1);
    v->tokens_.push_back(std::move(t));
  }
  return v;
}

void AddedVocabulary::SplitRaw(std::string_view text, std::vector<Segment>* out) const {
  Split(text, raw_trie_, out);
}

void AddedVocabulary::SplitNormalized(std::string_view text, std::vector<Segment>* out) const {
  Split(text, normalized_trie_, out);
}

void AddedVocabulary::Split(std::string_view text, const TokenTrie& trie,
                            std::vector<Segment>* out) const {
  size_t text_start = 0;  // start of the text not yet emitted
  size_t pos = 0;
  while (pos < text.size()) {
    size_t length = 0;
    const int32_t index = trie.MayStartWith(static_cast<uint8_t>(text[pos]))
                              ? trie.LongestPrefix(text.substr(pos), &length)
                              : -1;
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[index];
    size_t start = pos;
    size_t stop = pos + length;
    pos = stop;
    if (token.single_word) {
      const bool word_before = start > 0 && IsWordChar(LastCodePoint(text.substr(0, start)));
      size_t n = 0;
      const bool word_after = stop < text.size() && IsWordChar(DecodeUtf8At(text, stop, &n));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) {
      size_t s = start;
      while (s > text_start) {
        size_t last = s - 1;
        while (last > 0 && (static_cast<uint8_t>(text[last]) & 0xC0) == 0x80) --last;
        size_t n = 0;
        if (!IsWhiteSpace(DecodeUtf8At(text, last, &n))) break;
        s = last;
      }
      start = std::max(s, text_start);
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        size_t n = 0;
        if (!IsWhiteSpace(DecodeUtf8At(text, stop, &n))) break;
        stop += n;
      }
      pos = stop;
    }
    if (text_start < start) out->push_back(Segment{text_start, start, -1});
    out->push_back(Segment{start, stop, token.id});
    text_start = stop;
  }
  if (text_start < text.size()) out->push_back(Segment{text_start, text.size(), -1});
}

const AddedToken* AddedVocabulary::FindById(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedVocabulary::TokenToId(std::string_view content) const {
  auto it = by_content_.find(AsAbsl(content));
  if (it == by_content_.end()) return std::nullopt;
  return it->second;
}

}  // namespace qkvshare::agents::tokenizer_internal

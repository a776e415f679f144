#include "agents/gguf/gguf_tokenizer.h"

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace qkvshare::agents::gguf {
namespace {

// Plain (std::map) objects: an ordered_json object looks keys up linearly,
// quadratic for a 128k-piece vocabulary. Key order means nothing here.
using Json = nlohmann::json;

// llama.cpp llama_token_type / gguf-py TokenType.
enum TokenType : int64_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

constexpr char kSpace[] = "\xE2\x96\x81";  // U+2581 "▁"

// GPT-2's split regex (tokenizers ByteLevel use_regex).
constexpr char kGpt2Regex[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama 3 (digits in groups of up to 3) and Qwen2 (single digits).
constexpr char kLlama3Regex[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr char kQwen2Regex[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

absl::Status KeyError(const GgufFile& f, const std::string& key, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(f.path(), ": metadata '", key, "': ", what));
}

// An optional token id in [0, n).
absl::StatusOr<std::optional<int64_t>> TokenId(const GgufFile& f, const std::string& key,
                                               size_t n) {
  if (f.Find(key) == nullptr) return std::optional<int64_t>();
  absl::StatusOr<int64_t> id = f.GetInt(key);
  if (!id.ok()) return KeyError(f, key, "not an integer");
  if (*id < 0 || static_cast<size_t>(*id) >= n) {
    return KeyError(f, key, absl::StrCat(*id, " is not a token id (", n, " tokens)"));
  }
  return std::optional<int64_t>(*id);
}

absl::StatusOr<bool> BoolKey(const GgufFile& f, const std::string& key, bool fallback) {
  const Value* v = f.Find(key);
  if (v == nullptr) return fallback;
  if (v->type != ValueType::kBool) return KeyError(f, key, "not a bool");
  return v->i != 0;
}

// Code point boundaries of a UTF-8 string (start offsets of every character
// after the first).
std::vector<size_t> CharBoundaries(const std::string& s) {
  std::vector<size_t> out;
  for (size_t i = 1; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) out.push_back(i);
  }
  return out;
}

Json AddedToken(int64_t id, const std::string& content, bool special) {
  Json t;
  t["id"] = id;
  t["content"] = content;
  t["single_word"] = false;
  t["lstrip"] = false;
  t["rstrip"] = false;
  t["normalized"] = false;
  t["special"] = special;
  return t;
}

Json BosTemplate(const std::string& bos, int64_t bos_id) {
  Json p;
  p["type"] = "TemplateProcessing";
  p["single"] = Json::array({Json{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                             Json{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}});
  p["pair"] = Json::array({Json{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                           Json{{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                           Json{{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
                           Json{{"Sequence", {{"id", "B"}, {"type_id", 1}}}}});
  p["special_tokens"][bos] = {
      {"id", bos}, {"ids", Json::array({bos_id})}, {"tokens", Json::array({bos})}};
  return p;
}

// HF's SentencePieceExtractor: every split of a piece into two pieces, the
// splits of one piece by (left id, right id), all by the merged piece's
// score, highest first (stable: ties in id order).
Json SpmMerges(const std::vector<std::string>& tokens, const std::vector<double>& scores,
               const std::map<std::string, int64_t, std::less<>>& vocab) {
  struct Merge {
    int64_t left, right;
    double score;
  };
  std::vector<Merge> merges;
  for (size_t id = 0; id < tokens.size(); ++id) {
    const std::string_view piece = tokens[id];
    std::vector<Merge> local;
    for (size_t cut : CharBoundaries(tokens[id])) {
      auto l = vocab.find(piece.substr(0, cut));
      if (l == vocab.end()) continue;
      auto r = vocab.find(piece.substr(cut));
      if (r != vocab.end()) local.push_back({l->second, r->second, scores[id]});
    }
    std::sort(local.begin(), local.end(), [](const Merge& a, const Merge& b) {
      return a.left != b.left ? a.left < b.left : a.right < b.right;
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(),
                   [](const Merge& a, const Merge& b) { return a.score > b.score; });
  Json out = Json::array();
  for (const Merge& m : merges) out.push_back(Json::array({tokens[m.left], tokens[m.right]}));
  return out;
}

}  // namespace

absl::StatusOr<std::string> TokenizerJsonFromGguf(const GgufFile& f) {
  if (f.Find("tokenizer.ggml.model") == nullptr) return std::string();
  QKV_ASSIGN_OR_RETURN(std::string model, f.GetString("tokenizer.ggml.model"));
  if (model == "none" || model == "no_vocab") return std::string();
  if (model != "llama" && model != "gpt2") {
    return KeyError(f, "tokenizer.ggml.model",
                    absl::StrCat("'", model, "' is not supported (llama, gpt2)"));
  }
  QKV_ASSIGN_OR_RETURN(const std::vector<std::string>* tokens,
                       f.GetStringArray("tokenizer.ggml.tokens"));
  const size_t n = tokens->size();
  if (n == 0) return KeyError(f, "tokenizer.ggml.tokens", "empty");
  std::vector<int64_t> types(n, kNormal);
  if (f.Find("tokenizer.ggml.token_type") != nullptr) {
    QKV_ASSIGN_OR_RETURN(const std::vector<int64_t>* t, f.GetIntArray("tokenizer.ggml.token_type"));
    if (t->size() != n) {
      return KeyError(f, "tokenizer.ggml.token_type",
                      absl::StrCat(t->size(), " entries for ", n, " tokens"));
    }
    types = *t;
  }
  QKV_ASSIGN_OR_RETURN(std::optional<int64_t> bos, TokenId(f, "tokenizer.ggml.bos_token_id", n));
  QKV_ASSIGN_OR_RETURN(std::optional<int64_t> unk,
                       TokenId(f, "tokenizer.ggml.unknown_token_id", n));
  const bool spm = model == "llama";
  QKV_ASSIGN_OR_RETURN(bool add_bos, BoolKey(f, "tokenizer.ggml.add_bos_token", spm));
  if (add_bos && !bos.has_value()) {
    return KeyError(f, "tokenizer.ggml.add_bos_token", "true, but there is no bos_token_id");
  }
  if (!unk.has_value() && spm) {
    for (size_t i = 0; i < n; ++i) {
      if (types[i] == kUnknown) {
        unk = static_cast<int64_t>(i);
        break;
      }
    }
  }

  // The vocab (the first id of a piece given twice wins) and added tokens.
  std::map<std::string, int64_t, std::less<>> vocab;
  Json vocab_json = Json::object();
  Json added = Json::array();
  for (size_t i = 0; i < n; ++i) {
    const std::string& piece = (*tokens)[i];
    if (vocab.emplace(piece, static_cast<int64_t>(i)).second) {
      vocab_json[piece] = static_cast<int64_t>(i);
    }
    if (types[i] == kControl || types[i] == kUnknown) {
      added.push_back(AddedToken(static_cast<int64_t>(i), piece, true));
    } else if (types[i] == kUserDefined) {
      added.push_back(AddedToken(static_cast<int64_t>(i), piece, false));
    }
  }

  Json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  Json bpe;
  bpe["type"] = "BPE";
  bpe["dropout"] = nullptr;
  bpe["continuing_subword_prefix"] = nullptr;
  bpe["end_of_word_suffix"] = nullptr;
  if (spm) {
    std::vector<double> scores(n, 0.0);
    if (f.Find("tokenizer.ggml.scores") != nullptr) {
      QKV_ASSIGN_OR_RETURN(const std::vector<double>* s, f.GetFloatArray("tokenizer.ggml.scores"));
      if (s->size() != n) {
        return KeyError(f, "tokenizer.ggml.scores",
                        absl::StrCat(s->size(), " entries for ", n, " tokens"));
      }
      scores = *s;
    }
    QKV_ASSIGN_OR_RETURN(bool space_prefix, BoolKey(f, "tokenizer.ggml.add_space_prefix", true));
    Json normalizers = Json::array();
    if (space_prefix) normalizers.push_back({{"type", "Prepend"}, {"prepend", kSpace}});
    normalizers.push_back(
        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}});
    j["normalizer"] = {{"type", "Sequence"}, {"normalizers", normalizers}};
    j["pre_tokenizer"] = nullptr;
    Json decoders = Json::array();
    decoders.push_back({{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}});
    decoders.push_back({{"type", "ByteFallback"}});
    decoders.push_back({{"type", "Fuse"}});
    if (space_prefix) {
      decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    }
    j["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
    bpe["unk_token"] = unk.has_value() ? Json((*tokens)[*unk]) : Json(nullptr);
    bpe["fuse_unk"] = true;
    bpe["byte_fallback"] = true;
    bpe["ignore_merges"] = false;
    bpe["vocab"] = vocab_json;
    bpe["merges"] = SpmMerges(*tokens, scores, vocab);
  } else {
    std::string pre = "default";
    if (f.Find("tokenizer.ggml.pre") != nullptr) {
      QKV_ASSIGN_OR_RETURN(pre, f.GetString("tokenizer.ggml.pre"));
    }
    const char* regex = nullptr;
    bool ignore_merges = false;
    if (pre == "default" || pre == "gpt2" || pre == "smollm") {
      regex = kGpt2Regex;
    } else if (pre == "llama-bpe" || pre == "llama3") {
      regex = kLlama3Regex;
      ignore_merges = true;
    } else if (pre == "qwen2") {
      regex = kQwen2Regex;
    } else {
      return KeyError(f, "tokenizer.ggml.pre",
                      absl::StrCat("'", pre,
                                   "' is not supported (default, gpt2, smollm, llama-bpe, llama3, "
                                   "qwen2)"));
    }
    QKV_ASSIGN_OR_RETURN(const std::vector<std::string>* merges,
                         f.GetStringArray("tokenizer.ggml.merges"));
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = {{"type", "Sequence"},
                          {"pretokenizers", Json::array({Json{{"type", "Split"},
                                                              {"pattern", {{"Regex", regex}}},
                                                              {"behavior", "Isolated"},
                                                              {"invert", false}},
                                                         Json{{"type", "ByteLevel"},
                                                              {"add_prefix_space", false},
                                                              {"trim_offsets", true},
                                                              {"use_regex", false}}})}};
    j["decoder"] = {{"type", "ByteLevel"},
                    {"add_prefix_space", true},
                    {"trim_offsets", true},
                    {"use_regex", true}};
    bpe["unk_token"] = nullptr;
    bpe["fuse_unk"] = false;
    bpe["byte_fallback"] = false;
    bpe["ignore_merges"] = ignore_merges;
    bpe["vocab"] = vocab_json;
    Json m = Json::array();
    for (const std::string& s : *merges) m.push_back(s);
    bpe["merges"] = m;
  }
  j["post_processor"] = add_bos ? BosTemplate((*tokens)[*bos], *bos) : Json(nullptr);
  j["model"] = bpe;
  // Invalid UTF-8 in a piece becomes U+FFFD rather than an exception.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace qkvshare::agents::gguf

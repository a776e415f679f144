#include "agents/tokenizer/bpe_model.h"

#include <algorithm>
#include <cstdint>
#include <queue>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agents/tokenizer/string_view_compat.h"
#include "agents/tokenizer/utf8.h"
#include "base/status_macros.h"

namespace qkvshare::agents::tokenizer_internal {
namespace {

constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kCacheCapacity = 16384;

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const Json& model,
                                                             const JsonPath& where) {
  if (!model.is_object()) return where.Error("expected an object");
  QKV_ASSIGN_OR_RETURN(const std::string type, GetStringOr(model, "type", "", where));
  // Files written before the "type" tag existed are BPE when they have merges.
  if (type != "BPE" && !(type.empty() && FindMember(model, "merges") != nullptr)) {
    return where.Key("type").Error(
        absl::StrCat("unsupported model type \"", type, "\" (only BPE is supported)"));
  }
  std::unique_ptr<BpeModel> m(new BpeModel());
  if (const Json* dropout = FindMember(model, "dropout"); dropout != nullptr) {
    if (!dropout->is_number()) return where.Key("dropout").Error("expected a number or null");
    if (dropout->get<double>() > 0.0) {
      return where.Key("dropout").Error("BPE dropout (a training-time option) is not supported");
    }
  }
  QKV_ASSIGN_OR_RETURN(m->byte_fallback_, GetBoolOr(model, "byte_fallback", false, where));
  QKV_ASSIGN_OR_RETURN(m->fuse_unk_, GetBoolOr(model, "fuse_unk", false, where));
  QKV_ASSIGN_OR_RETURN(m->ignore_merges_, GetBoolOr(model, "ignore_merges", false, where));
  QKV_ASSIGN_OR_RETURN(m->continuing_subword_prefix_,
                       GetStringOr(model, "continuing_subword_prefix", "", where));
  QKV_ASSIGN_OR_RETURN(m->end_of_word_suffix_, GetStringOr(model, "end_of_word_suffix", "", where));

  QKV_ASSIGN_OR_RETURN(const Json* vocab, GetObject(model, "vocab", where));
  QKV_RETURN_IF_ERROR(m->ParseVocab(*vocab, where.Key("vocab")));
  if (const Json* merges = FindMember(model, "merges"); merges != nullptr) {
    if (!merges->is_array()) return where.Key("merges").Error("expected an array");
    QKV_RETURN_IF_ERROR(m->ParseMerges(*merges, where.Key("merges")));
  }
  QKV_ASSIGN_OR_RETURN(const std::string unk, GetStringOr(model, "unk_token", "", where));
  // An unk_token missing from the vocab is only an error once it is needed
  // (as in the tokenizers library).
  m->unk_token_ = unk;
  if (auto it = m->vocab_.find(unk); !unk.empty() && it != m->vocab_.end()) {
    m->unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    auto it = m->vocab_.find(absl::StrFormat("<0x%02X>", b));
    m->byte_ids_[b] = it == m->vocab_.end() ? -1 : it->second;
  }
  return m;
}

absl::Status BpeModel::ParseVocab(const Json& vocab, const JsonPath& where) {
  vocab_.reserve(vocab.size());
  int64_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > INT32_MAX - 1) {
      return where.Key(it.key()).Error("expected a non-negative integer id");
    }
    const auto id = static_cast<int32_t>(it.value().get<int64_t>());
    vocab_.emplace(it.key(), id);
    max_id = std::max<int64_t>(max_id, id);
  }
  id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  has_token_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [token, id] : vocab_) {
    id_to_token_[id] = token;
    has_token_[id] = true;
  }
  return absl::OkStatus();
}

absl::Status BpeModel::ParseMerges(const Json& merges, const JsonPath& where) {
  merges_.reserve(merges.size());
  const size_t prefix_len = continuing_subword_prefix_.size();
  for (size_t i = 0; i < merges.size(); ++i) {
    const Json& entry = merges[i];
    std::string left;
    std::string right;
    if (entry.is_string()) {  // "a b"
      const std::string s = entry.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos) {
        return where.Index(i).Error(absl::StrCat("merge \"", s, "\" has no space"));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
               entry[1].is_string()) {  // ["a", "b"]
      left = entry[0].get<std::string>();
      right = entry[1].get<std::string>();
    } else {
      return where.Index(i).Error("expected \"left right\" or [\"left\", \"right\"]");
    }
    auto l = vocab_.find(left);
    auto r = vocab_.find(right);
    if (l == vocab_.end() || r == vocab_.end() || right.size() < prefix_len) {
      return where.Index(i).Error(absl::StrCat("merge part \"", l == vocab_.end() ? left : right,
                                               "\" is not in model.vocab"));
    }
    const std::string merged = left + right.substr(prefix_len);
    auto n = vocab_.find(merged);
    if (n == vocab_.end()) {
      return where.Index(i).Error(
          absl::StrCat("merge result \"", merged, "\" is not in model.vocab"));
    }
    merges_[PairKey(l->second, r->second)] = MergeResult{static_cast<int32_t>(i), n->second};
  }
  return absl::OkStatus();
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(AsAbsl(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= id_limit() || !has_token_[id]) return nullptr;
  return &id_to_token_[id];
}

const BpeModel::MergeResult* BpeModel::FindMerge(int32_t left, int32_t right) const {
  auto it = merges_.find(PairKey(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

absl::Status BpeModel::InitialSymbols(std::string_view word, std::vector<int32_t>* symbols) const {
  int32_t pending_unk = 0;  // unknown characters waiting to be emitted as unk
  std::string affixed;
  size_t pos = 0;
  while (pos < word.size()) {
    size_t length = 0;
    const char32_t cp = DecodeUtf8At(word, pos, &length);
    std::string_view piece = word.substr(pos, length);
    const bool first = pos == 0;
    pos += length;
    const bool last = pos == word.size();
    if ((!first && !continuing_subword_prefix_.empty()) || (last && !end_of_word_suffix_.empty())) {
      affixed.clear();
      if (!first) affixed = continuing_subword_prefix_;
      affixed.append(piece);
      if (last) affixed += end_of_word_suffix_;
      piece = affixed;
    }
    if (auto it = vocab_.find(AsAbsl(piece)); it != vocab_.end()) {
      for (; pending_unk > 0; --pending_unk) symbols->push_back(*unk_id_);
      symbols->push_back(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all_bytes = true;
      for (char c : piece) all_bytes = all_bytes && byte_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all_bytes) {
        for (; pending_unk > 0; --pending_unk) symbols->push_back(*unk_id_);
        for (char c : piece) symbols->push_back(byte_ids_[static_cast<uint8_t>(c)]);
        continue;
      }
    }
    if (!unk_id_.has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "no token for character ", DescribeCodePoint(cp), " in \"", AsAbsl(word),
          "\": the BPE model has no byte fallback for it and ",
          unk_token_.empty()
              ? "no unk_token"
              : absl::StrCat("its unk_token \"", unk_token_, "\" is not in the vocab")));
    }
    // fuse_unk: a run of unknown characters becomes one unk.
    pending_unk = fuse_unk_ ? 1 : pending_unk + 1;
  }
  for (; pending_unk > 0; --pending_unk) symbols->push_back(*unk_id_);
  return absl::OkStatus();
}

void BpeModel::MergeAll(std::vector<int32_t>* symbols) const {
  const int32_t n = static_cast<int32_t>(symbols->size());
  if (n < 2 || merges_.empty()) return;
  struct Node {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
  };
  // Lowest rank first; on ties the leftmost position.
  auto lower_priority = [](const Candidate& a, const Candidate& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  std::vector<Node> nodes(n);
  std::vector<Candidate> initial;
  initial.reserve(n);
  for (int32_t i = 0; i < n; ++i) {
    nodes[i] = Node{(*symbols)[i], i - 1, i + 1 < n ? i + 1 : -1, true};
    if (i + 1 < n) {
      if (const MergeResult* m = FindMerge((*symbols)[i], (*symbols)[i + 1]); m != nullptr) {
        initial.push_back(Candidate{m->rank, i, m->new_id});
      }
    }
  }
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(lower_priority)> queue(
      lower_priority, std::move(initial));
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Node& cur = nodes[top.pos];
    if (!cur.alive || cur.next < 0) continue;
    Node& right = nodes[cur.next];
    // Skip stale candidates: the pair at `pos` no longer merges into new_id.
    const MergeResult* now = FindMerge(cur.id, right.id);
    if (now == nullptr || now->new_id != top.new_id) continue;
    cur.id = top.new_id;
    right.alive = false;
    cur.next = right.next;
    if (cur.next >= 0) nodes[cur.next].prev = top.pos;
    if (cur.prev >= 0) {
      if (const MergeResult* m = FindMerge(nodes[cur.prev].id, cur.id); m != nullptr) {
        queue.push(Candidate{m->rank, cur.prev, m->new_id});
      }
    }
    if (cur.next >= 0) {
      if (const MergeResult* m = FindMerge(cur.id, nodes[cur.next].id); m != nullptr) {
        queue.push(Candidate{m->rank, top.pos, m->new_id});
      }
    }
  }
  symbols->clear();
  for (int32_t i = 0; i >= 0; i = nodes[i].next) symbols->push_back(nodes[i].id);
}

absl::Status BpeModel::Tokenize(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return absl::OkStatus();
  if (ignore_merges_) {
    if (auto it = vocab_.find(AsAbsl(word)); it != vocab_.end()) {
      ids->push_back(it->second);
      return absl::OkStatus();
    }
  }
  const bool cacheable = word.size() < kMaxCachedWordBytes;
  if (cacheable) {
    absl::ReaderMutexLock lock(&cache_mu_);
    if (auto it = cache_.find(AsAbsl(word)); it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return absl::OkStatus();
    }
  }
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  QKV_RETURN_IF_ERROR(InitialSymbols(word, &symbols));
  MergeAll(&symbols);
  ids->insert(ids->end(), symbols.begin(), symbols.end());
  if (cacheable) {
    absl::MutexLock lock(&cache_mu_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::move(symbols));
  }
  return absl::OkStatus();
}

}  // namespace qkvshare::agents::tokenizer_internal

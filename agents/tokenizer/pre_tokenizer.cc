#include "agents/tokenizer/pre_tokenizer.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "agents/tokenizer/byte_level.h"
#include "agents/tokenizer/pattern.h"
#include "agents/tokenizer/string_view_compat.h"
#include "base/status_macros.h"

namespace qkvshare::agents::tokenizer_internal {
namespace {

// Splits every piece with `pattern`; a sub-piece starts the text only if its
// parent did and it begins at the parent's first byte.
absl::Status SplitPieces(const Pattern& pattern, SplitBehavior behavior, bool invert,
                         std::vector<PreToken>* pieces) {
  std::vector<PreToken> out;
  out.reserve(pieces->size());
  std::vector<ByteRange> ranges;
  for (PreToken& piece : *pieces) {
    ranges.clear();
    QKV_RETURN_IF_ERROR(pattern.Split(piece.text, behavior, invert, &ranges));
    if (ranges.size() == 1 && ranges[0].first == 0 && ranges[0].second == piece.text.size()) {
      out.push_back(std::move(piece));
      continue;
    }
    for (const ByteRange& r : ranges) {
      out.push_back(PreToken{piece.text.substr(r.first, r.second - r.first),
                             piece.at_text_start && r.first == 0});
    }
  }
  *pieces = std::move(out);
  return absl::OkStatus();
}

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Pattern> pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  absl::Status PreTokenize(std::vector<PreToken>* pieces) const override {
    return SplitPieces(*pattern_, behavior_, invert_, pieces);
  }

 private:
  std::unique_ptr<Pattern> pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Pattern> gpt2_regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(gpt2_regex)) {}
  absl::Status PreTokenize(std::vector<PreToken>* pieces) const override {
    if (add_prefix_space_) {
      for (PreToken& piece : *pieces) {
        if (!piece.text.empty() && piece.text[0] != ' ') piece.text.insert(0, " ");
      }
    }
    if (regex_ != nullptr) {
      QKV_RETURN_IF_ERROR(SplitPieces(*regex_, SplitBehavior::kIsolated, false, pieces));
    }
    std::string mapped;
    for (PreToken& piece : *pieces) {
      mapped.clear();
      AppendByteLevel(piece.text, &mapped);
      piece.text.swap(mapped);
    }
    return absl::OkStatus();
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Pattern> regex_;  // null when use_regex is false
};

enum class PrependScheme { kFirst, kAlways, kNever };

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)),
        scheme_(scheme),
        split_(split),
        delimiter_(Pattern::Literal(replacement_)) {}
  absl::Status PreTokenize(std::vector<PreToken>* pieces) const override {
    for (PreToken& piece : *pieces) {
      if (piece.text.find(' ') != std::string::npos) {
        piece.text = absl::StrReplaceAll(piece.text, {{" ", replacement_}});
      }
      const bool prepend = scheme_ == PrependScheme::kAlways ||
                           (scheme_ == PrependScheme::kFirst && piece.at_text_start);
      if (prepend && !piece.text.empty() &&
          piece.text.compare(0, replacement_.size(), replacement_) != 0) {
        piece.text.insert(0, replacement_);
      }
    }
    if (!split_) return absl::OkStatus();
    return SplitPieces(*delimiter_, SplitBehavior::kMergedWithNext, false, pieces);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
  std::unique_ptr<Pattern> delimiter_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  absl::Status PreTokenize(std::vector<PreToken>* pieces) const override {
    for (const auto& step : steps_) QKV_RETURN_IF_ERROR(step->PreTokenize(pieces));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

absl::StatusOr<std::unique_ptr<PreTokenizer>> RegexSplit(std::string_view regex,
                                                         SplitBehavior behavior, bool invert) {
  QKV_ASSIGN_OR_RETURN(auto pattern, Pattern::FromRegex(regex));
  return std::make_unique<SplitPreTokenizer>(std::move(pattern), behavior, invert);
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MetaspaceFromJson(const Json& value,
                                                                const JsonPath& where) {
  QKV_ASSIGN_OR_RETURN(std::string replacement, GetChar(value, "replacement", "\u2581", where));
  QKV_ASSIGN_OR_RETURN(const bool split, GetBoolOr(value, "split", true, where));
  PrependScheme scheme = PrependScheme::kAlways;
  if (const Json* s = FindMember(value, "prepend_scheme"); s != nullptr) {
    const std::string name = s->is_string() ? s->get<std::string>() : "";
    if (name == "first") {
      scheme = PrependScheme::kFirst;
    } else if (name == "always") {
      scheme = PrependScheme::kAlways;
    } else if (name == "never") {
      scheme = PrependScheme::kNever;
    } else {
      return where.Key("prepend_scheme").Error("expected \"first\", \"always\" or \"never\"");
    }
  }
  // Older files: add_prefix_space (true = always, false = never).
  QKV_ASSIGN_OR_RETURN(const bool add_prefix_space,
                       GetBoolOr(value, "add_prefix_space", true, where));
  if (!add_prefix_space) scheme = PrependScheme::kNever;
  return std::make_unique<MetaspacePreTokenizer>(std::move(replacement), scheme, split);
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::FromJson(const Json& value,
                                                                     const JsonPath& where) {
  QKV_ASSIGN_OR_RETURN(const std::string type, GetType(value, where));
  if (type == "Sequence") {
    QKV_ASSIGN_OR_RETURN(const Json* list, GetArray(value, "pretokenizers", where));
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      QKV_ASSIGN_OR_RETURN(auto step, FromJson((*list)[i], where.Key("pretokenizers").Index(i)));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "ByteLevel") {
    QKV_ASSIGN_OR_RETURN(const bool add_prefix_space,
                         GetBoolOr(value, "add_prefix_space", true, where));
    QKV_ASSIGN_OR_RETURN(const bool use_regex, GetBoolOr(value, "use_regex", true, where));
    std::unique_ptr<Pattern> regex;
    if (use_regex) {
      QKV_ASSIGN_OR_RETURN(regex, Pattern::FromRegex(kGpt2SplitRegex));
    }
    return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space, std::move(regex));
  }
  if (type == "Split") {
    QKV_ASSIGN_OR_RETURN(const Json* pattern_json, GetObject(value, "pattern", where));
    QKV_ASSIGN_OR_RETURN(auto pattern, Pattern::FromJson(*pattern_json, where.Key("pattern")));
    const Json* behavior_json = FindMember(value, "behavior");
    if (behavior_json == nullptr) return where.Key("behavior").Error("missing");
    QKV_ASSIGN_OR_RETURN(const SplitBehavior behavior,
                         ParseSplitBehavior(*behavior_json, where.Key("behavior")));
    QKV_ASSIGN_OR_RETURN(const bool invert, GetBoolOr(value, "invert", false, where));
    return std::make_unique<SplitPreTokenizer>(std::move(pattern), behavior, invert);
  }
  if (type == "Metaspace") return MetaspaceFromJson(value, where);
  if (type == "Digits") {
    QKV_ASSIGN_OR_RETURN(const bool individual,
                         GetBoolOr(value, "individual_digits", false, where));
    return RegexSplit(R"(\p{N})",
                      individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous, false);
  }
  if (type == "Whitespace") {
    return RegexSplit(R"(\w+|[^\w\s]+)", SplitBehavior::kRemoved, /*invert=*/true);
  }
  if (type == "WhitespaceSplit") return RegexSplit(R"(\s)", SplitBehavior::kRemoved, false);
  if (type == "Punctuation") {
    SplitBehavior behavior = SplitBehavior::kIsolated;
    if (const Json* b = FindMember(value, "behavior"); b != nullptr) {
      QKV_ASSIGN_OR_RETURN(behavior, ParseSplitBehavior(*b, where.Key("behavior")));
    }
    // ASCII punctuation plus Unicode category P (tokenizers' is_punc).
    return RegexSplit(R"([\p{P}!-/:-@\[-`{-~])", behavior, false);
  }
  return where.Key("type").Error(absl::StrCat(
      "unsupported pre_tokenizer \"", type,
      "\" (supported: ByteLevel, Split, Metaspace, Digits, Whitespace, WhitespaceSplit, "
      "Punctuation, Sequence)"));
}

}  // namespace qkvshare::agents::tokenizer_internal

#include "agents/tokenizer/pattern.h"

#include <pcre2.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "agents/tokenizer/string_view_compat.h"

namespace qkvshare::agents::tokenizer_internal {
namespace {

std::string Pcre2Message(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0) {
    return absl::StrCat("PCRE2 error ", code);
  }
  return std::string(reinterpret_cast<const char*>(buffer));
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* md) const { pcre2_match_data_free(md); }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Regex>> Regex::Create(std::string_view pattern) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                    PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, /*ccontext=*/nullptr);
  if (code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("invalid regex \"", AsAbsl(pattern),
                                                   "\" at offset ", error_offset, ": ",
                                                   Pcre2Message(error_code)));
  }
  // JIT is an optimisation: without it (unsupported platform) matching still works.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return std::unique_ptr<Regex>(new Regex(std::string(pattern), code));
}

Regex::~Regex() { pcre2_code_free(code_); }

absl::Status Regex::FindAll(std::string_view text, std::vector<ByteRange>* matches) const {
  if (text.empty()) return absl::OkStatus();
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(
      pcre2_match_data_create_from_pattern(code_, nullptr));
  if (md == nullptr) return absl::ResourceExhaustedError("pcre2_match_data_create failed");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t start = 0;
  while (start < text.size()) {
    // Callers pass valid UTF-8 (checked once at Encode's entry); PCRE2_NOTEMPTY
    // makes every match advance.
    uint32_t options = PCRE2_NO_UTF_CHECK | PCRE2_NOTEMPTY;
    int rc = pcre2_match(code_, subject, text.size(), start, options, md.get(), nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // The JIT's 32 KiB default stack is exhausted: redo this one match with
      // the interpreter, which uses the heap.
      rc = pcre2_match(code_, subject, text.size(), start, options | PCRE2_NO_JIT, md.get(),
                       nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return absl::InternalError(
          absl::StrCat("regex \"", pattern_, "\" failed at byte ", start, ": ", Pcre2Message(rc)));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(md.get());
    if (ovector[1] <= start || ovector[0] >= ovector[1]) break;  // defensive: no progress
    matches->emplace_back(ovector[0], ovector[1]);
    start = ovector[1];
  }
  return absl::OkStatus();
}

absl::StatusOr<SplitBehavior> ParseSplitBehavior(const Json& value, const JsonPath& where) {
  if (!value.is_string()) return where.Error("expected a split behavior name");
  const std::string name = value.get<std::string>();
  // The tokenizers library serialises these in PascalCase; accept lowercase too.
  if (name == "Removed" || name == "removed") return SplitBehavior::kRemoved;
  if (name == "Isolated" || name == "isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious" || name == "merged_with_previous") {
    return SplitBehavior::kMergedWithPrevious;
  }
  if (name == "MergedWithNext" || name == "merged_with_next") {
    return SplitBehavior::kMergedWithNext;
  }
  if (name == "Contiguous" || name == "contiguous") return SplitBehavior::kContiguous;
  return where.Error(absl::StrCat("unknown split behavior \"", name,
                                  "\" (expected Removed, Isolated, MergedWithPrevious, "
                                  "MergedWithNext or Contiguous)"));
}

absl::StatusOr<std::unique_ptr<Pattern>> Pattern::FromJson(const Json& value,
                                                           const JsonPath& where) {
  if (value.is_object() && value.size() == 1) {
    if (const Json* s = FindMember(value, "String"); s != nullptr && s->is_string()) {
      return Literal(s->get<std::string>());
    }
    if (const Json* r = FindMember(value, "Regex"); r != nullptr && r->is_string()) {
      absl::StatusOr<std::unique_ptr<Pattern>> p = FromRegex(r->get<std::string>());
      if (!p.ok()) return where.Key("Regex").Error(p.status().message());
      return p;
    }
  }
  return where.Error("expected {\"String\": ...} or {\"Regex\": ...}");
}

std::unique_ptr<Pattern> Pattern::Literal(std::string literal) {
  std::unique_ptr<Pattern> p(new Pattern());
  p->literal_ = std::move(literal);
  return p;
}

absl::StatusOr<std::unique_ptr<Pattern>> Pattern::FromRegex(std::string_view regex) {
  absl::StatusOr<std::unique_ptr<Regex>> compiled = Regex::Create(regex);
  if (!compiled.ok()) return compiled.status();
  std::unique_ptr<Pattern> p(new Pattern());
  p->regex_ = *std::move(compiled);
  return p;
}

absl::Status Pattern::FindAll(std::string_view text, std::vector<ByteRange>* matches) const {
  if (regex_ != nullptr) return regex_->FindAll(text, matches);
  if (literal_.empty()) return absl::OkStatus();
  size_t pos = 0;
  while ((pos = text.find(literal_, pos)) != std::string_view::npos) {
    matches->emplace_back(pos, pos + literal_.size());
    pos += literal_.size();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Pattern::ReplaceAll(std::string_view text,
                                                std::string_view content) const {
  std::vector<ByteRange> matches;
  absl::Status status = FindAll(text, &matches);
  if (!status.ok()) return status;
  if (matches.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size() + matches.size() * content.size());
  size_t prev = 0;
  for (const ByteRange& m : matches) {
    out.append(text.substr(prev, m.first - prev));
    out.append(content);
    prev = m.second;
  }
  out.append(text.substr(prev));
  return out;
}

absl::Status Pattern::Split(std::string_view text, SplitBehavior behavior, bool invert,
                            std::vector<ByteRange>* pieces) const {
  if (text.empty()) return absl::OkStatus();
  std::vector<ByteRange> matches;
  absl::Status status = FindAll(text, &matches);
  if (!status.ok()) return status;

  // The whole text as alternating (range, is_match) segments.
  struct Segment {
    size_t begin;
    size_t end;
    bool is_match;
  };
  std::vector<Segment> segments;
  segments.reserve(2 * matches.size() + 1);
  size_t prev = 0;
  for (const ByteRange& m : matches) {
    if (prev < m.first) segments.push_back({prev, m.first, invert});
    segments.push_back({m.first, m.second, !invert});
    prev = m.second;
  }
  if (prev < text.size()) segments.push_back({prev, text.size(), invert});

  // (range, remove) per behavior, as in NormalizedString::split.
  struct Piece {
    size_t begin;
    size_t end;
    bool remove;
  };
  std::vector<Piece> out;
  out.reserve(segments.size());
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Segment& s : segments) out.push_back({s.begin, s.end, false});
      break;
    case SplitBehavior::kRemoved:
      for (const Segment& s : segments) out.push_back({s.begin, s.end, s.is_match});
      break;
    case SplitBehavior::kContiguous: {
      bool previous_match = false;
      for (const Segment& s : segments) {
        if (s.is_match == previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Segment& s : segments) {
        if (s.is_match && !previous_match && !out.empty()) {
          out.back().end = s.end;
        } else {
          out.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().begin = it->begin;
        } else {
          out.push_back({it->begin, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
  }
  for (const Piece& p : out) {
    if (!p.remove && p.begin < p.end) pieces->emplace_back(p.begin, p.end);
  }
  return absl::OkStatus();
}

}  // namespace qkvshare::agents::tokenizer_internal

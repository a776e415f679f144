#include "agents/tokenizer/decoder.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "agents/tokenizer/byte_level.h"
#include "agents/tokenizer/string_view_compat.h"
#include "base/status_macros.h"

namespace qkvshare::agents::tokenizer_internal {
namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "<0xE2>" -> 0xE2; -1 for any other token.
int ByteFallbackValue(std::string_view token) {
  if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') return -1;
  const int hi = HexDigit(token[3]);
  const int lo = HexDigit(token[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// Strips up to `start` leading and `stop` trailing copies of `content`.
void StripToken(std::string_view content, int64_t start, int64_t stop, std::string* token) {
  if (content.empty()) return;
  size_t begin = 0;
  for (int64_t i = 0; i < start && token->compare(begin, content.size(), content) == 0; ++i) {
    begin += content.size();
  }
  size_t end = token->size();
  for (int64_t i = 0; i < stop && end >= begin + content.size() &&
                      token->compare(end - content.size(), content.size(), content) == 0;
       ++i) {
    end -= content.size();
  }
  *token = token->substr(begin, end - begin);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> Decoder::FromJson(const Json* value,
                                                           const JsonPath& where) {
  std::unique_ptr<Decoder> d(new Decoder());
  if (value == nullptr) {
    d->join_with_space_ = true;
    return d;
  }
  QKV_RETURN_IF_ERROR(d->Add(*value, where));
  return d;
}

absl::Status Decoder::Add(const Json& value, const JsonPath& where) {
  QKV_ASSIGN_OR_RETURN(const std::string type, GetType(value, where));
  auto unsupported_here = [&](std::string_view after) {
    return where.Key("type").Error(
        absl::StrCat("a \"", type, "\" decoder after ", AsAbsl(after), " is not supported"));
  };
  if (type == "Sequence") {
    QKV_ASSIGN_OR_RETURN(const Json* list, GetArray(value, "decoders", where));
    for (size_t i = 0; i < list->size(); ++i) {
      QKV_RETURN_IF_ERROR(Add((*list)[i], where.Key("decoders").Index(i)));
    }
    return absl::OkStatus();
  }
  if (type == "Fuse") {
    fused_ = true;
    return absl::OkStatus();
  }
  if (type == "Strip") {
    QKV_ASSIGN_OR_RETURN(std::string content, GetChar(value, "content", " ", where));
    QKV_ASSIGN_OR_RETURN(const int64_t start, GetIntOr(value, "start", 0, where));
    QKV_ASSIGN_OR_RETURN(const int64_t stop, GetIntOr(value, "stop", 0, where));
    if (start < 0 || stop < 0) return where.Error("start and stop must be >= 0");
    if (fused_) {
      if (!strip_content_.empty()) return unsupported_here("another whole-text Strip");
      strip_content_ = std::move(content);
      strip_start_ = start;
      strip_stop_ = stop;
      return absl::OkStatus();
    }
    if (after_byte_fallback_) return unsupported_here("ByteFallback without Fuse");
    steps_.push_back(Step{Step::Kind::kStrip, "", std::move(content), false, start, stop});
    return absl::OkStatus();
  }
  if (fused_) return unsupported_here("Fuse or ByteLevel");
  if (type == "ByteFallback") {
    after_byte_fallback_ = true;
    steps_.push_back(Step{Step::Kind::kByteFallback, "", ""});
    return absl::OkStatus();
  }
  if (after_byte_fallback_) return unsupported_here("ByteFallback");
  if (type == "Replace") {
    QKV_ASSIGN_OR_RETURN(const Json* pattern, GetObject(value, "pattern", where));
    const Json* literal = FindMember(*pattern, "String");
    if (literal == nullptr || !literal->is_string()) {
      return where.Key("pattern").Error("only {\"String\": ...} patterns are supported here");
    }
    QKV_ASSIGN_OR_RETURN(std::string content, GetString(value, "content", where));
    steps_.push_back(Step{Step::Kind::kReplace, literal->get<std::string>(), std::move(content)});
    return absl::OkStatus();
  }
  if (type == "ByteLevel") {
    steps_.push_back(Step{Step::Kind::kByteLevel, "", ""});
    fused_ = true;  // the tokenizers ByteLevel decoder returns one string
    return absl::OkStatus();
  }
  if (type == "Metaspace") {
    QKV_ASSIGN_OR_RETURN(std::string replacement, GetChar(value, "replacement", "\u2581", where));
    QKV_ASSIGN_OR_RETURN(const std::string scheme,
                         GetStringOr(value, "prepend_scheme", "always", where));
    QKV_ASSIGN_OR_RETURN(const bool add_prefix_space,
                         GetBoolOr(value, "add_prefix_space", true, where));
    if (scheme != "first" && scheme != "always" && scheme != "never") {
      return where.Key("prepend_scheme").Error("expected \"first\", \"always\" or \"never\"");
    }
    const bool drop_first = add_prefix_space && scheme != "never";
    steps_.push_back(Step{Step::Kind::kMetaspace, std::move(replacement), " ", drop_first});
    return absl::OkStatus();
  }
  return where.Key("type").Error(absl::StrCat(
      "unsupported decoder \"", type,
      "\" (supported: Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace)"));
}

void Decoder::AppendTokenBytes(std::string_view token, bool first_token, std::string* out) const {
  if (steps_.empty()) {
    out->append(token);
    return;
  }
  std::string t(token);
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Step::Kind::kReplace:
        if (!step.from.empty() && t.find(step.from) != std::string::npos) {
          t = absl::StrReplaceAll(t, {{step.from, step.to}});
        }
        break;
      case Step::Kind::kByteFallback:
        if (const int b = ByteFallbackValue(t); b >= 0) t.assign(1, static_cast<char>(b));
        break;
      case Step::Kind::kByteLevel: {
        std::string bytes;
        if (DecodeByteLevel(t, &bytes)) t.swap(bytes);  // else: kept as is
        break;
      }
      case Step::Kind::kMetaspace:
        if (t.find(step.from) != std::string::npos) {
          t = absl::StrReplaceAll(
              t, {{step.from, first_token && step.drop_in_first_token ? "" : step.to}});
        }
        break;
      case Step::Kind::kStrip:
        StripToken(step.to, step.start, step.stop, &t);
        break;
    }
  }
  out->append(t);
}

DecodeStream::DecodeStream(const Decoder& decoder)
    : decoder_(decoder), lead_to_strip_(decoder.strip_start_) {}

void DecodeStream::Push(std::string_view token, std::string* out) {
  bytes_.clear();
  if (decoder_.join_with_space_ && tokens_ > 0) bytes_.push_back(' ');
  decoder_.AppendTokenBytes(token, tokens_ == 0, &bytes_);
  ++tokens_;
  chars_.clear();
  utf8_.Append(bytes_, &chars_);
  Emit(chars_, out);
}

void DecodeStream::Flush(std::string* out) {
  chars_.clear();
  utf8_.Flush(&chars_);
  Emit(chars_, out);
  held_tail_.clear();  // trailing strip characters are dropped at the end
  held_count_ = 0;
}

void DecodeStream::Emit(std::string_view chars, std::string* out) {
  const std::string& content = decoder_.strip_content_;
  if (content.empty() || (lead_to_strip_ == 0 && decoder_.strip_stop_ == 0)) {
    out->append(chars);
    return;
  }
  // Character by character: the leading and trailing strip rules look at
  // whole characters of the final text.
  size_t pos = 0;
  while (pos < chars.size()) {
    size_t length = 0;
    DecodeUtf8At(chars, pos, &length);
    const std::string_view c = chars.substr(pos, length);
    pos += length;
    const bool is_content = c == content;
    if (lead_to_strip_ > 0) {
      if (is_content) {
        --lead_to_strip_;
        continue;
      }
      lead_to_strip_ = 0;
    }
    if (decoder_.strip_stop_ > 0) {
      if (is_content) {
        held_tail_.append(c);
        if (++held_count_ > decoder_.strip_stop_) {
          out->append(held_tail_, 0, content.size());
          held_tail_.erase(0, content.size());
          --held_count_;
        }
        continue;
      }
      out->append(held_tail_);
      held_tail_.clear();
      held_count_ = 0;
    }
    out->append(c);
  }
}

}  // namespace qkvshare::agents::tokenizer_internal

#include "agents/tokenizer/normalizer.h"

#include <unicode/bytestream.h>
#include <unicode/casemap.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agents/tokenizer/pattern.h"
#include "agents/tokenizer/string_view_compat.h"
#include "agents/tokenizer/utf8.h"
#include "base/status_macros.h"

namespace qkvshare::agents::tokenizer_internal {
namespace {

absl::Status IcuError(std::string_view what, UErrorCode code) {
  return absl::InternalError(absl::StrCat("ICU ", AsAbsl(what), " failed: ", u_errorName(code)));
}

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  absl::Status Normalize(std::string* text) const override {
    for (const auto& step : steps_) QKV_RETURN_IF_ERROR(step->Normalize(text));
    return absl::OkStatus();
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  absl::Status Normalize(std::string* text) const override {
    if (!text->empty()) text->insert(0, prefix_);
    return absl::OkStatus();
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Pattern> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  absl::Status Normalize(std::string* text) const override {
    QKV_ASSIGN_OR_RETURN(*text, pattern_->ReplaceAll(*text, content_));
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<Pattern> pattern_;
  std::string content_;
};

// NFC/NFD/NFKC/NFKD through ICU's Normalizer2 singletons (thread-safe).
class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(const icu::Normalizer2* form) : form_(form) {}
  absl::Status Normalize(std::string* text) const override {
    UErrorCode code = U_ZERO_ERROR;
    const icu::StringPiece in(text->data(), static_cast<int32_t>(text->size()));
    if (form_->isNormalizedUTF8(in, code) && U_SUCCESS(code)) return absl::OkStatus();
    code = U_ZERO_ERROR;
    std::string out;
    icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text->size()));
    form_->normalizeUTF8(0, in, sink, /*edits=*/nullptr, code);
    if (U_FAILURE(code)) return IcuError("normalizeUTF8", code);
    *text = std::move(out);
    return absl::OkStatus();
  }

 private:
  const icu::Normalizer2* form_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  absl::Status Normalize(std::string* text) const override {
    UErrorCode code = U_ZERO_ERROR;
    std::string out;
    icu::StringByteSink<std::string> sink(&out, static_cast<int32_t>(text->size()));
    icu::CaseMap::utf8ToLower("", /*options=*/0,
                              icu::StringPiece(text->data(), static_cast<int32_t>(text->size())),
                              sink, /*edits=*/nullptr, code);
    if (U_FAILURE(code)) return IcuError("utf8ToLower", code);
    *text = std::move(out);
    return absl::OkStatus();
  }
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  absl::Status Normalize(std::string* text) const override {
    size_t begin = 0;
    size_t end = text->size();
    if (left_) {
      while (begin < end) {
        size_t length = 0;
        if (!u_isUWhiteSpace(static_cast<UChar32>(DecodeUtf8At(*text, begin, &length)))) break;
        begin += length;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t last = end - 1;  // start of the last character
        while (last > begin && (static_cast<uint8_t>((*text)[last]) & 0xC0) == 0x80) --last;
        size_t length = 0;
        if (!u_isUWhiteSpace(static_cast<UChar32>(DecodeUtf8At(*text, last, &length)))) break;
        end = last;
      }
    }
    *text = text->substr(begin, end - begin);
    return absl::OkStatus();
  }

 private:
  bool left_;
  bool right_;
};

class StripAccentsNormalizer final : public Normalizer {
 public:
  absl::Status Normalize(std::string* text) const override {
    std::string out;
    out.reserve(text->size());
    size_t pos = 0;
    while (pos < text->size()) {
      size_t length = 0;
      const char32_t cp = DecodeUtf8At(*text, pos, &length);
      if (u_charType(static_cast<UChar32>(cp)) != U_NON_SPACING_MARK) {
        out.append(*text, pos, length);
      }
      pos += length;
    }
    *text = std::move(out);
    return absl::OkStatus();
  }
};

absl::StatusOr<std::unique_ptr<Normalizer>> UnicodeForm(const std::string& type,
                                                        const JsonPath& where) {
  UErrorCode code = U_ZERO_ERROR;
  const icu::Normalizer2* form = nullptr;
  if (type == "NFC") form = icu::Normalizer2::getNFCInstance(code);
  if (type == "NFD") form = icu::Normalizer2::getNFDInstance(code);
  if (type == "NFKC") form = icu::Normalizer2::getNFKCInstance(code);
  if (type == "NFKD") form = icu::Normalizer2::getNFKDInstance(code);
  if (form == nullptr || U_FAILURE(code)) {
    return where.Error(absl::StrCat("ICU has no ", type, " normalizer: ", u_errorName(code)));
  }
  return std::make_unique<UnicodeNormalizer>(form);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> Normalizer::FromJson(const Json& value,
                                                                 const JsonPath& where) {
  QKV_ASSIGN_OR_RETURN(const std::string type, GetType(value, where));
  if (type == "Sequence") {
    QKV_ASSIGN_OR_RETURN(const Json* list, GetArray(value, "normalizers", where));
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      QKV_ASSIGN_OR_RETURN(auto step, FromJson((*list)[i], where.Key("normalizers").Index(i)));
      steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "Prepend") {
    QKV_ASSIGN_OR_RETURN(std::string prefix, GetString(value, "prepend", where));
    return std::make_unique<PrependNormalizer>(std::move(prefix));
  }
  if (type == "Replace") {
    QKV_ASSIGN_OR_RETURN(const Json* pattern, GetObject(value, "pattern", where));
    QKV_ASSIGN_OR_RETURN(auto compiled, Pattern::FromJson(*pattern, where.Key("pattern")));
    QKV_ASSIGN_OR_RETURN(std::string content, GetString(value, "content", where));
    return std::make_unique<ReplaceNormalizer>(std::move(compiled), std::move(content));
  }
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    return UnicodeForm(type, where);
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip") {
    QKV_ASSIGN_OR_RETURN(const bool left, GetBoolOr(value, "strip_left", true, where));
    QKV_ASSIGN_OR_RETURN(const bool right, GetBoolOr(value, "strip_right", true, where));
    return std::make_unique<StripNormalizer>(left, right);
  }
  if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
  return where.Key("type").Error(
      absl::StrCat("unsupported normalizer \"", type,
                   "\" (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, "
                   "Lowercase, Strip, StripAccents)"));
}

}  // namespace qkvshare::agents::tokenizer_internal

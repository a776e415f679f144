#include "base/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"

namespace qkvshare {

namespace {

// Length of the valid UTF-8 sequence at text[i], or 0.
size_t Utf8SequenceAt(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = byte(i);
  size_t n = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
  if (n == 0 || i + n > text.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  }
  // Overlong 3/4-byte forms, surrogates, > U+10FFFF.
  if (c == 0xE0 && byte(i + 1) < 0xA0) return 0;
  if (c == 0xED && byte(i + 1) >= 0xA0) return 0;
  if (c == 0xF0 && byte(i + 1) < 0x90) return 0;
  if (c == 0xF4 && byte(i + 1) >= 0x90) return 0;
  return n;
}

void AppendHex(unsigned char c, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  *out += "\\x";
  *out += kHex[c >> 4];
  *out += kHex[c & 15];
}

// Appends `text` with control characters and invalid UTF-8 escaped (and
// backslashes, if asked: LogSafe's output is then unambiguous). Without
// backslashes it is the last line of defence the formatter applies to every
// message.
void EscapeControls(std::string_view text, bool escape_backslash, std::string* out) {
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\\' && escape_backslash) {
      *out += "\\\\";
    } else if (c == '\n') {
      *out += "\\n";
    } else if (c == '\r') {
      *out += "\\r";
    } else if (c == '\t') {
      *out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      AppendHex(c, out);
    } else if (c >= 0x80) {
      const size_t n = Utf8SequenceAt(text, i);
      // C1 controls (U+0080..U+009F) are 0xC2 0x80..0x9F.
      if (n == 0 || (c == 0xC2 && static_cast<unsigned char>(text[i + 1]) < 0xA0)) {
        AppendHex(c, out);
      } else {
        out->append(text.substr(i, n));
        i += n;
        continue;
      }
    } else {
      *out += static_cast<char>(c);
    }
    ++i;
  }
}

// "%q": the message with control characters escaped.
class EscapedMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const std::string_view payload(msg.payload.data(), msg.payload.size());
    std::string escaped;
    EscapeControls(payload, /*escape_backslash=*/false, &escaped);
    dest.append(escaped.data(), escaped.data() + escaped.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<EscapedMessage>();
  }
};

}  // namespace

std::string LogSafe(std::string_view text, size_t max_bytes) {
  size_t keep = text.size();
  if (keep > max_bytes) {
    keep = max_bytes;
    while (keep > 0 && (static_cast<unsigned char>(text[keep]) & 0xC0) == 0x80) --keep;
  }
  std::string out;
  out.reserve(keep + 16);
  EscapeControls(text.substr(0, keep), /*escape_backslash=*/true, &out);
  if (keep < text.size()) absl::StrAppend(&out, "...(+", text.size() - keep, " bytes)");
  return out;
}

absl::Status InitLogging(std::string_view level, bool journald_style) {
  std::string name(level);
  if (name.empty()) {
    const char* env = std::getenv("QKVSHARE_LOG_LEVEL");
    name = env != nullptr ? env : "info";
  }
  std::shared_ptr<spdlog::logger> logger = spdlog::get("qkvshare");
  if (logger == nullptr) logger = spdlog::stderr_color_mt("qkvshare");
  spdlog::set_default_logger(logger);
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<EscapedMessage>('q');
  formatter->set_pattern(journald_style ? "[%l] %q" : "[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %q");
  spdlog::set_formatter(std::move(formatter));
  spdlog::level::level_enum lvl = spdlog::level::from_str(name);
  if (lvl == spdlog::level::off && name != "off") {
    spdlog::set_level(spdlog::level::info);
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown log level '", name, "' (want trace, debug, info, warn, error, critical or off)"));
  }
  spdlog::set_level(lvl);
  return absl::OkStatus();
}

}  // namespace qkvshare

#include "base/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"

namespace qkvshare {

absl::Status InitLogging(std::string_view level, bool journald_style) {
  std::string name(level);
  if (name.empty()) {
    const char* env = std::getenv("QKVSHARE_LOG_LEVEL");
    name = env != nullptr ? env : "info";
  }
  std::shared_ptr<spdlog::logger> logger = spdlog::get("qkvshare");
  if (logger == nullptr) logger = spdlog::stderr_color_mt("qkvshare");
  spdlog::set_default_logger(logger);
  if (journald_style) {
    spdlog::set_pattern("[%l] %v");
  } else {
    spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
  }
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

// File: base/logging.h
// -----------------------------------------------------------------------------
// Process-wide logging set-up on spdlog. Binaries call InitLogging() once at
// start; libraries just use spdlog::info/warn/... on the default logger.
//
// The level comes from, in order: the `level` argument when non-empty, the
// environment variable QKVSHARE_LOG_LEVEL, else "info". Accepted names:
// trace, debug, info, warn, error, critical, off.
#ifndef QKVSHARE_BASE_LOGGING_H_
#define QKVSHARE_BASE_LOGGING_H_

#include <string_view>

#include "absl/status/status.h"

namespace qkvshare {

// Installs a stderr logger as spdlog's default with the chosen level and the
// pattern "[time] [level] message". When `journald_style` is true (stderr is
// captured by journald, which stamps its own time), the time stamp is left
// out. Safe to call more than once (the last call wins).
// Returns InvalidArgument for an unknown level name; logging then stays at
// "info".
absl::Status InitLogging(std::string_view level = {}, bool journald_style = false);

}  // namespace qkvshare

#endif  // QKVSHARE_BASE_LOGGING_H_

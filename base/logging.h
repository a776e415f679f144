// File: base/logging.h
// -----------------------------------------------------------------------------
// Process-wide logging set-up on spdlog. Binaries call InitLogging() once at
// start; libraries just use spdlog::info/warn/... on the default logger.
//
// The level comes from, in order: the `level` argument when non-empty, the
// environment variable QKVSHARE_LOG_LEVEL, else "info". Accepted names:
// trace, debug, info, warn, error, critical, off.
//
// Log injection: every message is written with its control characters
// escaped (a message cannot start a new line), and client-supplied values
// (workflow names, labels, status messages that echo a request) go through
// LogSafe(), which also escapes backslashes and invalid UTF-8 and bounds the
// length.
#ifndef QKVSHARE_BASE_LOGGING_H_
#define QKVSHARE_BASE_LOGGING_H_

#include <cstddef>
#include <string>
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

// `text` made safe for one log line: backslash as \\, \n \r \t, other
// control characters (C0, DEL, C1) and bytes that are not part of valid UTF-8
// as \xNN; valid UTF-8 otherwise kept. Longer than `max_bytes` of input: the
// first `max_bytes` (on a character boundary) and "...(+N bytes)".
std::string LogSafe(std::string_view text, size_t max_bytes = 200);

}  // namespace qkvshare

#endif  // QKVSHARE_BASE_LOGGING_H_

// File: daemon/systemd_notify.h
// -----------------------------------------------------------------------------
// sd_notify(3) for Type=notify units (libsystemd). Every call is a no-op when
// NOTIFY_SOCKET is not set, so the daemon runs the same outside systemd.
//
// Thread safety: thread-safe (sd_notify is).
#ifndef QKVSHARE_DAEMON_SYSTEMD_NOTIFY_H_
#define QKVSHARE_DAEMON_SYSTEMD_NOTIFY_H_

#include <string>

#include "absl/time/time.h"

namespace qkvshare::daemon {

class SystemdNotifier {
 public:
  // True when started by systemd with NOTIFY_SOCKET set.
  static bool Enabled();
  // READY=1 with a STATUS= line.
  static void Ready(const std::string& status);
  // STOPPING=1.
  static void Stopping();
  // RELOADING=1 and, after the reload, READY=1 again.
  static void Reloading();
  // WATCHDOG=1.
  static void Watchdog();
  // STATUS=... (shown by systemctl status).
  static void Status(const std::string& status);
  // Half of WatchdogSec= (the interval at which to call Watchdog()), or
  // ZeroDuration() when the watchdog is off.
  static absl::Duration WatchdogInterval();
};

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_SYSTEMD_NOTIFY_H_

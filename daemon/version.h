// File: daemon/version.h
// The qkvshare release version, reported by GetStatus and `--version`.
#ifndef QKVSHARE_DAEMON_VERSION_H_
#define QKVSHARE_DAEMON_VERSION_H_

namespace qkvshare {

inline constexpr char kVersion[] = "0.1.0";

}  // namespace qkvshare

#endif  // QKVSHARE_DAEMON_VERSION_H_

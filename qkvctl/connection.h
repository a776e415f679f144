// File: qkvctl/connection.h
// -----------------------------------------------------------------------------
// Where qkvctl connects and, when it cannot, why: the daemon's address
// (--addr, else $QKVSHARE_ADDR, else the packaged default) and a one-line
// diagnosis of an unreachable daemon made by looking at the socket file
// itself (stat + connect), so that "not running" and "no permission" read
// differently and no gRPC internals reach the user.
//
// Thread safety: pure functions (DiagnoseUnreachable touches the file system
// and opens and closes one socket).
#ifndef QKVSHARE_QKVCTL_CONNECTION_H_
#define QKVSHARE_QKVCTL_CONNECTION_H_

#include <string>

namespace qkvshare::qkvctl {

// The daemon's packaged default address (configs/daemon.yaml `listen`).
inline constexpr char kDefaultAddress[] = "unix:///run/qkvshare/qkvshared.sock";
// Environment variable that overrides the default (but not --addr).
inline constexpr char kAddressEnv[] = "QKVSHARE_ADDR";
// The bearer token of a TCP listener, or a file holding it (--token_file),
// and the CA file of a TLS one (--tls_ca_file).
inline constexpr char kTokenEnv[] = "QKVSHARE_TOKEN";
inline constexpr char kTokenFileEnv[] = "QKVSHARE_TOKEN_FILE";
inline constexpr char kTlsCaFileEnv[] = "QKVSHARE_TLS_CA_FILE";

// The address to use: `flag` if non-empty, else `env` if non-empty, else
// kDefaultAddress. A bare absolute path ("/run/x.sock") becomes "unix:///run/x.sock";
// anything else (unix:..., host:port, dns:///host:port) is passed to gRPC as is.
std::string ResolveAddress(const std::string& flag, const std::string& env);

// Filesystem path of a "unix:" address ("unix:///a/b.sock" -> "/a/b.sock",
// "unix:rel.sock" -> "rel.sock"); empty for other schemes.
std::string UnixSocketPathOf(const std::string& address);

// Why nothing answers at `address`, as the text after
// "cannot connect to <address>: ", e.g.
//   "no daemon is listening (no socket file /run/qkvshare/qkvshared.sock; is qkvshared running?)"
//   "permission denied (socket group qkvshare, mode 0660: are you in group qkvshare?)"
// For a unix socket it stats the path and its directory and tries connect();
// when connect() succeeds the daemon accepted but did not answer in time.
std::string DiagnoseUnreachable(const std::string& address);

// True when `address` is a unix socket that accepts a connect() right now, or
// is not a unix address (nothing to check). Tells a daemon that answered
// UNAVAILABLE (e.g. shutting down) from one that went away.
bool SocketAcceptsConnections(const std::string& address);

}  // namespace qkvshare::qkvctl

#endif  // QKVSHARE_QKVCTL_CONNECTION_H_

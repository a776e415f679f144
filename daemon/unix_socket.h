// File: daemon/unix_socket.h
// -----------------------------------------------------------------------------
// Helpers for the daemon's Unix-domain gRPC socket: address parsing, refusing
// to take over a socket another live daemon listens on, removing a stale one,
// and setting the socket's mode (0660: group membership is the authorization).
#ifndef QKVSHARE_DAEMON_UNIX_SOCKET_H_
#define QKVSHARE_DAEMON_UNIX_SOCKET_H_

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"

namespace qkvshare::daemon {

// Filesystem path of a gRPC "unix:" address ("unix:///run/x.sock" ->
// "/run/x.sock", "unix:rel.sock" -> "rel.sock"). Errors: InvalidArgument for
// other schemes, an empty path, or a path longer than sun_path (107 bytes).
absl::StatusOr<std::string> UnixSocketPath(const std::string& address);

// Makes `path` ready for bind(): creates the parent directory (mode 0750) when
// missing; if a socket file exists and a process accepts connections on it,
// returns AlreadyExists naming the path; a stale socket file is removed.
// Errors: FailedPrecondition when `path` exists and is not a socket;
// PermissionDenied / Internal from the file system.
// `removed_stale` (may be null) is set when a stale socket was removed.
absl::Status PrepareUnixSocketPath(const std::string& path, bool* removed_stale = nullptr);

// Creates the socket's parent directory (mode 0750) when missing.
// Errors: PermissionDenied naming the directory.
absl::Status CreateSocketDirectory(const std::string& path);

// chmod(path, mode). Errors: Internal with errno text.
absl::Status SetSocketMode(const std::string& path, mode_t mode);

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_UNIX_SOCKET_H_

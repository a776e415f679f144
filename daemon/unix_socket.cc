#include "daemon/unix_socket.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace qkvshare::daemon {

absl::StatusOr<std::string> UnixSocketPath(const std::string& address) {
  std::string path;
  if (absl::StartsWith(address, "unix://")) {
    path = address.substr(7);
  } else if (absl::StartsWith(address, "unix:")) {
    path = address.substr(5);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "' is not a unix: address (e.g. unix:///run/q/q.sock)"));
  }
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat("'", address, "': empty path"));
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': socket path longer than ",
                                                   sizeof(sockaddr_un::sun_path) - 1, " bytes"));
  }
  return path;
}

namespace {

// True when something accepts connections on the socket at `path`.
bool SomeoneListens(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.data(), path.size());
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

}  // namespace

absl::Status CreateSocketDirectory(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty() && !std::filesystem::exists(parent)) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot create socket directory ", parent.string(), ": ", ec.message()));
    }
    chmod(parent.c_str(), 0750);
  }
  return absl::OkStatus();
}

absl::Status PrepareUnixSocketPath(const std::string& path, bool* removed_stale) {
  if (removed_stale != nullptr) *removed_stale = false;
  if (absl::Status s = CreateSocketDirectory(path); !s.ok()) return s;
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::InternalError(absl::StrCat(path, ": ", strerror(errno)));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " exists and is not a socket; refusing to replace it"));
  }
  if (SomeoneListens(path)) {
    return absl::AlreadyExistsError(
        absl::StrCat("another process (a running qkvshared?) is listening on ", path));
  }
  if (unlink(path.c_str()) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot remove stale socket ", path, ": ", strerror(errno)));
  }
  if (removed_stale != nullptr) *removed_stale = true;
  return absl::OkStatus();
}

absl::Status SetSocketMode(const std::string& path, mode_t mode) {
  if (chmod(path.c_str(), mode) != 0) {
    return absl::InternalError(absl::StrCat("chmod ", path, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace qkvshare::daemon

#include "qkvctl/connection.h"

#include <errno.h>
#include <grp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace qkvshare::qkvctl {

namespace {

std::string GroupName(gid_t gid) {
  struct group g;
  struct group* found = nullptr;
  char buf[4096];
  if (getgrgid_r(gid, &g, buf, sizeof(buf), &found) == 0 && found != nullptr) return g.gr_name;
  return absl::StrCat(gid);
}

std::string ParentDir(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string PermissionHint(const std::string& path, const struct stat& st) {
  std::string group = GroupName(st.st_gid);
  return absl::StrFormat("permission denied on %s (group %s, mode %04o: are you in group %s?)",
                         path, group, st.st_mode & 07777, group);
}

// errno of connect() to `path`, 0 on success.
int TryConnect(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) return ENAMETOOLONG;
  memcpy(addr.sun_path, path.data(), path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int err = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 ? 0 : errno;
  close(fd);
  return err;
}

std::string DiagnoseUnixSocket(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    int err = errno;
    std::string dir = ParentDir(path);
    struct stat dst;
    if (err == EACCES && stat(dir.c_str(), &dst) == 0) return PermissionHint(dir, dst);
    if (err == ENOENT) {
      return absl::StrCat("no daemon is listening (no socket file ", path,
                          "; is qkvshared running?)");
    }
    return absl::StrCat(path, ": ", strerror(err));
  }
  if (!S_ISSOCK(st.st_mode)) return absl::StrCat(path, " is not a socket (wrong --addr?)");
  int err = TryConnect(path);
  switch (err) {
    case 0:
      return "the daemon accepted the connection but did not answer (is it starting up, hung, or "
             "not qkvshared?)";
    case EACCES:
    case EPERM:
      return PermissionHint(path, st);
    case ECONNREFUSED:
      return absl::StrCat("no daemon is listening (stale socket file ", path,
                          "; is qkvshared running?)");
    case ENAMETOOLONG:
      return absl::StrCat("socket path longer than 107 bytes: ", path);
    default:
      return absl::StrCat(path, ": ", strerror(err));
  }
}

}  // namespace

std::string ResolveAddress(const std::string& flag, const std::string& env) {
  std::string a = !flag.empty() ? flag : !env.empty() ? env : std::string(kDefaultAddress);
  if (absl::StartsWith(a, "/")) a = absl::StrCat("unix://", a);
  return a;
}

std::string UnixSocketPathOf(const std::string& address) {
  if (absl::StartsWith(address, "unix://")) return address.substr(7);
  if (absl::StartsWith(address, "unix:")) return address.substr(5);
  return "";
}

std::string DiagnoseUnreachable(const std::string& address) {
  std::string path = UnixSocketPathOf(address);
  if (path.empty()) {
    return "no daemon is answering (is qkvshared running, with tcp_listen set to this address?)";
  }
  return DiagnoseUnixSocket(path);
}

bool SocketAcceptsConnections(const std::string& address) {
  std::string path = UnixSocketPathOf(address);
  return path.empty() || TryConnect(path) == 0;
}

}  // namespace qkvshare::qkvctl

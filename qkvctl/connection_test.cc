#include "qkvctl/connection.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "qkvctl/testing/short_temp_dir.h"

namespace qkvshare::qkvctl {
namespace {

using ::qkvshare::qkvctl::testing::ShortTempDir;

// A bound Unix socket at `path`; listening when `listen_too`. Returns the fd.
int BindSocket(const std::string& path, bool listen_too) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, path.data(), path.size());
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << strerror(errno);
  if (listen_too) {
    EXPECT_EQ(listen(fd, 4), 0);
  }
  return fd;
}

TEST(ConnectionTest, AddressPrecedenceFlagThenEnvThenDefault) {
  EXPECT_EQ(ResolveAddress("unix:///a.sock", "unix:///b.sock"), "unix:///a.sock");
  EXPECT_EQ(ResolveAddress("", "unix:///b.sock"), "unix:///b.sock");
  EXPECT_EQ(ResolveAddress("", ""), "unix:///run/qkvshare/qkvshared.sock");
  EXPECT_EQ(ResolveAddress("/tmp/x.sock", ""), "unix:///tmp/x.sock");
  EXPECT_EQ(ResolveAddress("127.0.0.1:7420", ""), "127.0.0.1:7420");
  EXPECT_EQ(UnixSocketPathOf("unix:///run/q.sock"), "/run/q.sock");
  EXPECT_EQ(UnixSocketPathOf("unix:rel.sock"), "rel.sock");
  EXPECT_EQ(UnixSocketPathOf("127.0.0.1:7420"), "");
}

TEST(ConnectionTest, MissingSocketMeansNoDaemon) {
  ShortTempDir dir;
  std::string path = dir.File("qkvshared.sock");
  EXPECT_EQ(DiagnoseUnreachable("unix://" + path),
            "no daemon is listening (no socket file " + path + "; is qkvshared running?)");
  EXPECT_FALSE(SocketAcceptsConnections("unix://" + path));
}

TEST(ConnectionTest, StaleSocketMeansNoDaemon) {
  ShortTempDir dir;
  std::string path = dir.File("qkvshared.sock");
  close(BindSocket(path, /*listen_too=*/false));  // file left behind, nobody listens
  EXPECT_EQ(DiagnoseUnreachable("unix://" + path),
            "no daemon is listening (stale socket file " + path + "; is qkvshared running?)");
}

TEST(ConnectionTest, NotASocket) {
  ShortTempDir dir;
  std::string path = dir.File("plain");
  std::ofstream(path) << "x";
  EXPECT_EQ(DiagnoseUnreachable("unix://" + path), path + " is not a socket (wrong --addr?)");
}

TEST(ConnectionTest, ListeningButSilentDaemon) {
  ShortTempDir dir;
  std::string path = dir.File("qkvshared.sock");
  int fd = BindSocket(path, /*listen_too=*/true);
  EXPECT_TRUE(SocketAcceptsConnections("unix://" + path));
  EXPECT_NE(
      DiagnoseUnreachable("unix://" + path).find("accepted the connection but did not answer"),
      std::string::npos);
  close(fd);
}

TEST(ConnectionTest, TcpAddressGetsGenericHint) {
  EXPECT_NE(DiagnoseUnreachable("127.0.0.1:1").find("no daemon is answering"), std::string::npos);
  EXPECT_TRUE(SocketAcceptsConnections("127.0.0.1:1"));  // nothing to check for TCP
}

// The socket is mode 0660 (like the daemon's); a user outside its group must
// get the permission hint naming the group. As root, the check runs in a
// child that drops to uid/gid 65534 (nobody/nogroup).
TEST(ConnectionTest, PermissionDeniedNamesTheGroup) {
  ShortTempDir dir;
  std::string path = dir.File("qkvshared.sock");
  int fd = BindSocket(path, /*listen_too=*/true);
  ASSERT_EQ(chmod(path.c_str(), geteuid() == 0 ? 0660 : 0), 0);
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  std::string message;
  if (geteuid() != 0) {
    message = DiagnoseUnreachable("unix://" + path);
  } else {
    int pipefd[2];
    ASSERT_EQ(pipe(pipefd), 0);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(pipefd[0]);
      if (setgroups(0, nullptr) != 0 || setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
      std::string m = DiagnoseUnreachable("unix://" + path);
      _exit(write(pipefd[1], m.data(), m.size()) == static_cast<ssize_t>(m.size()) ? 0 : 4);
    }
    close(pipefd[1]);
    char buf[512];
    for (ssize_t n; (n = read(pipefd[0], buf, sizeof(buf))) > 0;) message.append(buf, n);
    close(pipefd[0]);
    int wstatus = 0;
    waitpid(pid, &wstatus, 0);
    ASSERT_TRUE(WIFEXITED(wstatus)) << wstatus;
    ASSERT_NE(WEXITSTATUS(wstatus), 3) << "could not drop to uid 65534 (user namespace?)";
    ASSERT_EQ(WEXITSTATUS(wstatus), 0);
  }
  EXPECT_EQ(message.rfind("permission denied on " + path + " (group ", 0), 0u) << message;
  EXPECT_NE(message.find(geteuid() == 0 ? "mode 0660: are you in group " : "mode 0000"),
            std::string::npos)
      << message;
  close(fd);
}

}  // namespace
}  // namespace qkvshare::qkvctl

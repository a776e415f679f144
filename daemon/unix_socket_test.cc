#include "daemon/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace qkvshare::daemon {
namespace {

// Socket paths must fit sun_path (108 bytes); TEST_TMPDIR is often longer.
std::string Tmp(const std::string& name) {
  static std::string dir = [] {
    char tmpl[] = "/tmp/qkvsock.XXXXXX";
    return std::string(mkdtemp(tmpl));
  }();
  return dir + "/" + name;
}

int Listen(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  EXPECT_LT(path.size(), sizeof addr.sun_path);
  memcpy(addr.sun_path, path.c_str(), path.size());
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  EXPECT_EQ(listen(fd, 1), 0);
  return fd;
}

TEST(UnixSocketTest, ParsesAddresses) {
  EXPECT_EQ(UnixSocketPath("unix:///run/q/q.sock").value(), "/run/q/q.sock");
  EXPECT_EQ(UnixSocketPath("unix:rel.sock").value(), "rel.sock");
  EXPECT_EQ(UnixSocketPath("127.0.0.1:80").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(UnixSocketPath("unix://").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(UnixSocketPath("unix:///" + std::string(200, 'x')).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(UnixSocketTest, CreatesParentAndRefusesLiveSocket) {
  std::string path = Tmp("sub/dir/q.sock");
  ASSERT_TRUE(PrepareUnixSocketPath(path).ok());
  int fd = Listen(path);
  absl::Status s = PrepareUnixSocketPath(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(s.message().find(path), std::string::npos);
  ASSERT_TRUE(SetSocketMode(path, 0660).ok());
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  close(fd);  // now stale: removed
  EXPECT_TRUE(PrepareUnixSocketPath(path).ok());
  EXPECT_NE(access(path.c_str(), F_OK), 0);
}

TEST(UnixSocketTest, RefusesToReplaceARegularFile) {
  std::string path = Tmp("not_a_socket");
  std::ofstream(path) << "data";
  EXPECT_EQ(PrepareUnixSocketPath(path).code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace qkvshare::daemon

#include "cachecard/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "absl/strings/str_cat.h"

namespace qkvshare::cachecard {
namespace {

absl::Status Errno(int error, absl::string_view what, absl::string_view path) {
  return absl::ErrnoToStatus(error, absl::StrCat(what, " ", path));
}

}  // namespace

absl::StatusOr<std::unique_ptr<FileSink>> FileSink::Create(const std::string& path) {
  const std::string partial = path + ".partial";
  const int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno(errno, "cannot create", partial);
  return std::unique_ptr<FileSink>(new FileSink(path, fd));
}

FileSink::~FileSink() {
  if (fd_ >= 0) ::close(fd_);
  if (!finished_) ::unlink(partial_path().c_str());
}

absl::Status FileSink::Begin(uint64_t card_bytes) {
  if (::ftruncate(fd_, static_cast<off_t>(card_bytes)) != 0) {
    return Errno(errno, "cannot size", partial_path());
  }
  return absl::OkStatus();
}

absl::Status FileSink::Write(uint64_t offset, absl::Span<const uint8_t> data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n =
        ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Errno(n < 0 ? errno : EIO, "cannot write", partial_path());
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status FileSink::Finish() {
  if (::fsync(fd_) != 0) return Errno(errno, "cannot fsync", partial_path());
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) return Errno(errno, "cannot close", partial_path());
  if (std::rename(partial_path().c_str(), path_.c_str()) != 0) {
    return Errno(errno, "cannot rename to", path_);
  }
  finished_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<FileSource>> FileSource::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno(errno, "cannot open", path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    return Errno(error, "cannot stat", path);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a regular file"));
  }
  return std::unique_ptr<FileSource>(new FileSource(path, fd, static_cast<uint64_t>(st.st_size)));
}

FileSource::~FileSource() { ::close(fd_); }

absl::Status FileSource::Read(uint64_t offset, absl::Span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n =
        ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno(errno, "cannot read", path_);
    if (n == 0) {
      return absl::DataLossError(absl::StrCat(path_, ": unexpected end of file at offset ",
                                              offset + done, " (the file shrank?)"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace qkvshare::cachecard

#include "cachecard/shm/shm_segment.h"

#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace qkvshare::cachecard::shm {
namespace {

constexpr char kPrefix[] = "qkvshare.";

absl::Status Errno(int error, absl::string_view what, absl::string_view name) {
  return absl::ErrnoToStatus(error, absl::StrCat(what, " ", name));
}

std::string LockPath(absl::string_view instance, const std::string& dir) {
  return absl::StrCat(dir.empty() ? std::string(kShmDir) : dir, "/", kPrefix, instance, ".lock");
}

}  // namespace

absl::Status ValidateInstanceName(absl::string_view instance) {
  bool ok = !instance.empty() && instance.size() <= 64;
  for (char c : instance) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '_' || c == '-');
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("instance name '", instance, "' must match [A-Za-z0-9_-]{1,64}"));
}

std::string SegmentName(absl::string_view instance, const CardId& id) {
  return absl::StrCat("/", kPrefix, instance, ".", id.ToHex());
}

std::string PendingSegmentName(absl::string_view instance, uint64_t n) {
  return absl::StrCat("/", kPrefix, instance, ".pending-", n);
}

absl::Status RenameSegment(const std::string& from, const std::string& to) {
  const std::string from_path = absl::StrCat(kShmDir, from);
  const std::string to_path = absl::StrCat(kShmDir, to);
  if (::renameat2(AT_FDCWD, from_path.c_str(), AT_FDCWD, to_path.c_str(), RENAME_NOREPLACE) != 0) {
    return Errno(errno, absl::StrCat("cannot rename segment ", from, " to"), to);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ShmSegmentSink>> ShmSegmentSink::Create(const std::string& name) {
  // O_EXCL never follows a symlink; O_NOFOLLOW says so explicitly.
  const int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int error = errno;
    struct stat st;
    if (error == EEXIST && ::lstat(absl::StrCat(kShmDir, name).c_str(), &st) == 0 &&
        st.st_uid != ::geteuid()) {
      return absl::AlreadyExistsError(absl::StrCat("shared memory segment ", name,
                                                   " already exists and belongs to ",
                                                   DescribeUid(st.st_uid)));
    }
    return Errno(error, "cannot create shared memory segment", name);
  }
  if (::fchmod(fd, 0600) != 0) {  // exactly 0600 whatever the umask
    const int error = errno;
    ::close(fd);
    ::shm_unlink(name.c_str());
    return Errno(error, "cannot chmod", name);
  }
  return std::unique_ptr<ShmSegmentSink>(new ShmSegmentSink(name, fd));
}

ShmSegmentSink::~ShmSegmentSink() {
  if (map_ != nullptr) ::munmap(map_, size_);
  if (fd_ >= 0) ::close(fd_);
  if (!sealed_) ::shm_unlink(name_.c_str());
}

absl::Status ShmSegmentSink::Begin(uint64_t card_bytes) {
  const int error = ::posix_fallocate(fd_, 0, static_cast<off_t>(card_bytes));
  if (error != 0) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", card_bytes,
                                                     " bytes of shared memory for ", name_, ": ",
                                                     std::strerror(error)));
  }
  void* p = ::mmap(nullptr, card_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED) return Errno(errno, "cannot map", name_);
  map_ = static_cast<uint8_t*>(p);
  size_ = card_bytes;
  return absl::OkStatus();
}

absl::Span<uint8_t> ShmSegmentSink::Window(uint64_t offset, uint64_t bytes) {
  if (map_ == nullptr || offset > size_ || bytes > size_ - offset) return {};
  return {map_ + offset, static_cast<size_t>(bytes)};
}

absl::Status ShmSegmentSink::Write(uint64_t offset, absl::Span<const uint8_t> data) {
  absl::Span<uint8_t> window = Window(offset, data.size());
  if (window.size() != data.size()) {
    return absl::OutOfRangeError(absl::StrCat("write of [", offset, ", +", data.size(),
                                              ") outside segment ", name_, " of ", size_,
                                              " bytes"));
  }
  if (!data.empty()) std::memcpy(window.data(), data.data(), data.size());
  return absl::OkStatus();
}

absl::Status ShmSegmentSink::Finish() {
  if (map_ != nullptr && ::munmap(map_, size_) != 0) return Errno(errno, "cannot unmap", name_);
  map_ = nullptr;
  finished_ = true;
  return absl::OkStatus();
}

absl::StatusOr<CardPtr> ShmSegmentSink::Seal(Card::Verify verify) {
  if (!finished_) return absl::FailedPreconditionError("Seal() before Finish()");
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED) return Errno(errno, "cannot map", name_);
  ::close(fd_);
  fd_ = -1;
  const uint64_t size = size_;
  absl::StatusOr<CardPtr> card = Card::FromMapping(
      {static_cast<const uint8_t*>(p), static_cast<size_t>(size)}, [p, size] { ::munmap(p, size); },
      verify);
  if (card.ok()) sealed_ = true;  // else the destructor unlinks
  return card;
}

absl::StatusOr<CardPtr> OpenSharedCard(const std::string& name, Card::Verify verify) {
  const int fd = ::shm_open(name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0);
  if (fd < 0) return Errno(errno, "cannot open shared memory segment", name);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    return Errno(error, "cannot stat", name);
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("segment ", name, " is empty"));
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  const int error = errno;
  ::close(fd);
  if (p == MAP_FAILED) return Errno(error, "cannot map", name);
  absl::StatusOr<CardPtr> card = Card::FromMapping(
      {static_cast<const uint8_t*>(p), static_cast<size_t>(size)}, [p, size] { ::munmap(p, size); },
      verify);
  if (!card.ok()) {
    return absl::Status(card.status().code(),
                        absl::StrCat("segment ", name, ": ", card.status().message()));
  }
  return card;
}

std::string DescribeUid(uid_t uid) {
  std::vector<char> buf(16384);
  passwd pw;
  passwd* found = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return absl::StrCat("user '", found->pw_name, "' (uid ", uid, ")");
  }
  return absl::StrCat("uid ", uid);
}

absl::StatusOr<StaleSegments> RemoveInstanceSegments(absl::string_view instance) {
  const std::string prefix = absl::StrCat(kPrefix, instance, ".");
  const std::string lock = absl::StrCat(prefix, "lock");
  DIR* dir = ::opendir(kShmDir);
  if (dir == nullptr) return Errno(errno, "cannot list", kShmDir);
  const int dir_fd = ::dirfd(dir);
  StaleSegments stale;
  absl::Status status;
  while (const dirent* e = ::readdir(dir)) {
    const absl::string_view file(e->d_name);
    if (!absl::StartsWith(file, prefix) || file == lock) continue;
    struct stat st;
    if (::fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone
    if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid()) {
      if (stale.foreign++ == 0) {
        stale.foreign_example =
            absl::StrCat(kShmDir, "/", file, " (", DescribeUid(st.st_uid),
                         S_ISREG(st.st_mode) ? "" : ", not a regular file", ")");
      }
      continue;
    }
    if (::shm_unlink(absl::StrCat("/", file).c_str()) == 0) {
      ++stale.removed;
      stale.bytes += static_cast<uint64_t>(st.st_size);
    } else if (errno != ENOENT && status.ok()) {
      status = Errno(errno, "cannot remove stale segment", file);
    }
  }
  ::closedir(dir);
  if (!status.ok()) return status;
  return stale;
}

namespace {

// Why the lock file open as `fd` (or, fd < 0, the name `path`) is not ours
// to use; OK when it is a regular file of our user without group/other
// permissions.
absl::Status CheckLockFile(const std::string& path, const struct stat& st) {
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("instance lock ", path, " is not a regular file; refusing to use it"));
  }
  if (st.st_uid != ::geteuid()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "instance lock ", path, " belongs to ", DescribeUid(st.st_uid), ", not to this daemon's ",
        DescribeUid(::geteuid()),
        ": another user holds the instance name (remove the file, choose another instance, or "
        "keep the lock in a directory only the daemon can write)"));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("instance lock %s has mode %04o; want 0600 (no group/other access)", path,
                        st.st_mode & 07777));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<InstanceLock>> InstanceLock::Acquire(absl::string_view instance,
                                                                    const std::string& dir) {
  if (absl::Status s = ValidateInstanceName(instance); !s.ok()) return s;
  const std::string path = LockPath(instance, dir);
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
      const int error = errno;
      struct stat st;
      if (error == ELOOP) {
        return absl::FailedPreconditionError(absl::StrCat(
            "instance lock ", path, " is a symbolic link; refusing to follow it (remove it)"));
      }
      if ((error == EACCES || error == EPERM) && ::lstat(path.c_str(), &st) == 0) {
        if (absl::Status s = CheckLockFile(path, st); !s.ok()) return s;
      }
      return Errno(error, "cannot open lock", path);
    }
    struct stat held;
    if (::fstat(fd, &held) != 0) {
      const int error = errno;
      ::close(fd);
      return Errno(error, "cannot stat lock", path);
    }
    if (absl::Status s = CheckLockFile(path, held); !s.ok()) {
      ::close(fd);
      return s;
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      ::close(fd);
      if (error == EWOULDBLOCK) {
        return absl::FailedPreconditionError(absl::StrCat(
            "card store instance '", instance, "' is in use by another process (", path, ")"));
      }
      return Errno(error, "cannot lock", path);
    }
    // The holder we raced with may have unlinked the file after we opened
    // it: the lock only counts if `path` still names our inode.
    struct stat named;
    if (::lstat(path.c_str(), &named) == 0 && held.st_ino == named.st_ino &&
        held.st_dev == named.st_dev) {
      return std::unique_ptr<InstanceLock>(new InstanceLock(path, fd));
    }
    ::close(fd);
  }
  return absl::UnavailableError(absl::StrCat("cannot acquire ", path, " (keeps changing)"));
}

InstanceLock::~InstanceLock() {
  ::unlink(path_.c_str());
  ::close(fd_);
}

}  // namespace qkvshare::cachecard::shm

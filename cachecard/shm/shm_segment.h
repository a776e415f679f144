// File: cachecard/shm/shm_segment.h
// -----------------------------------------------------------------------------
// POSIX shared-memory segments holding one CacheCard each, and the protocol
// another local process uses to read them (docs/cachecard.md "Shared-memory
// card store"):
//
//   name      /qkvshare.<instance>.<card id hex>   (file /dev/shm/qkvshare....)
//   create    shm_open(O_CREAT | O_EXCL, 0600), posix_fallocate(card_bytes),
//             mmap read-write, write the card once, munmap
//   read      shm_open(O_RDONLY), fstat, mmap(PROT_READ, MAP_SHARED), close,
//             validate the bytes as a card; the mapping outlives an unlink
//
// ShmSegmentSink writes a new segment; OpenSharedCard maps an existing one
// read-only (zero copy). InstanceLock keeps two live stores of one instance
// apart, so that a starting store may remove the segments of a crashed one.
//
// Ownership: each object owns its descriptor and mapping; Cards returned by
// OpenSharedCard / Seal() unmap on destruction.
// Thread safety: one thread at a time per object; functions are reentrant.
//
// Example (another process, e.g. qkvctl):
//   QKV_ASSIGN_OR_RETURN(CardId id, CardId::FromHex(id_hex));
//   QKV_ASSIGN_OR_RETURN(CardPtr card, OpenSharedCard(SegmentName("main", id)));
//   QKV_RETURN_IF_ERROR(ExportCard(*card, "/tmp/card.qkvcard"));
#ifndef QKVSHARE_CACHECARD_SHM_SHM_SEGMENT_H_
#define QKVSHARE_CACHECARD_SHM_SHM_SEGMENT_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cachecard/card.h"
#include "cachecard/ids.h"
#include "cachecard/io.h"

namespace qkvshare::cachecard::shm {

// Where shm_open names live on Linux.
inline constexpr char kShmDir[] = "/dev/shm";

// OK for [A-Za-z0-9_-]{1,64}; InvalidArgument otherwise.
absl::Status ValidateInstanceName(absl::string_view instance);

// "/qkvshare.<instance>.<id hex>" (a shm_open name).
std::string SegmentName(absl::string_view instance, const CardId& id);

// "/qkvshare.<instance>.pending-<n>": where a store writes a card before
// its (content-derived) id is known. Removed with the instance's other
// segments by RemoveInstanceSegments.
std::string PendingSegmentName(absl::string_view instance, uint64_t n);

// Renames segment `from` to `to` (both shm_open names; a mapping of it stays
// valid). Errors: AlreadyExists if `to` exists; others from rename.
absl::Status RenameSegment(const std::string& from, const std::string& to);

// A CardSink creating and filling one new segment (mode 0600). The segment is
// sized and its memory committed in Begin() (posix_fallocate, so a full
// /dev/shm is ResourceExhausted, never SIGBUS). After Finish(), Seal() maps it
// read-only as a Card. If destroyed before a successful Seal() the segment is
// unlinked.
class ShmSegmentSink final : public CardSink {
 public:
  // Errors: AlreadyExists if the name is taken; others from shm_open.
  static absl::StatusOr<std::unique_ptr<ShmSegmentSink>> Create(const std::string& name);
  ~ShmSegmentSink() override;

  absl::Status Begin(uint64_t card_bytes) override;
  absl::Span<uint8_t> Window(uint64_t offset, uint64_t bytes) override;
  absl::Status Write(uint64_t offset, absl::Span<const uint8_t> data) override;
  // Unmaps the writable mapping.
  absl::Status Finish() override;

  // REQUIRES: Finish() succeeded. Maps the segment read-only and parses it
  // (`verify` as in Card). On error the segment is unlinked.
  absl::StatusOr<CardPtr> Seal(Card::Verify verify);

  const std::string& name() const { return name_; }

 private:
  ShmSegmentSink(std::string name, int fd) : name_(std::move(name)), fd_(fd) {}

  std::string name_;
  int fd_;
  uint8_t* map_ = nullptr;
  uint64_t size_ = 0;
  bool finished_ = false;
  bool sealed_ = false;
};

// Maps segment `name` read-only and validates it as a card (`verify` as in
// Card). Errors: NotFound if there is no such segment; DataLoss etc. from
// validation (e.g. a segment still being written).
absl::StatusOr<CardPtr> OpenSharedCard(const std::string& name,
                                       Card::Verify verify = Card::Verify::kAll);

// What RemoveInstanceSegments found.
struct StaleSegments {
  int removed = 0;              // segments unlinked
  uint64_t bytes = 0;           // their sizes
  int foreign = 0;              // names of the instance owned by another user: left alone
  std::string foreign_example;  // one of them, with its owner, for a message
};

// Unlinks every segment /dev/shm/qkvshare.<instance>.* that this process's
// user owns, except a lock file, and reports the count and bytes. Names that
// are not regular files or belong to another user are not touched (counted
// in `foreign`). For a store's start (leftovers of a crashed predecessor);
// REQUIRES: the caller holds the InstanceLock.
absl::StatusOr<StaleSegments> RemoveInstanceSegments(absl::string_view instance);

// "user 'name' (uid N)" for messages; the number alone if `uid` has no name.
std::string DescribeUid(uid_t uid);

// An exclusive flock on <dir>/qkvshare.<instance>.lock, held for the
// lifetime of the object (released automatically if the process dies) and
// unlinked on release. `dir` empty means /dev/shm (world-writable: any user
// can squat the name there, so the daemon keeps its lock in its runtime
// directory, next to its socket).
//
// The lock file is opened with O_NOFOLLOW | O_CLOEXEC (a symlink planted at
// the name is refused, never followed) and must then be a regular file owned
// by this process's user with no group/other permissions.
class InstanceLock {
 public:
  // Errors: FailedPrecondition if another live process holds the lock, if
  // the name is a symlink or not a regular file, or if it belongs to another
  // user (the message names the owner); InvalidArgument for a bad instance
  // name; others from open/flock.
  static absl::StatusOr<std::unique_ptr<InstanceLock>> Acquire(absl::string_view instance,
                                                               const std::string& dir = "");
  ~InstanceLock();

  const std::string& path() const { return path_; }

 private:
  InstanceLock(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;
};

}  // namespace qkvshare::cachecard::shm

#endif  // QKVSHARE_CACHECARD_SHM_SHM_SEGMENT_H_

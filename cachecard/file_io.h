// File: cachecard/file_io.h
// -----------------------------------------------------------------------------
// Card sinks and sources over regular files (`.qkvcard`: the card's bytes,
// nothing else; docs/cachecard.md).
//
// FileSink writes to "<path>.partial" and renames it to <path> in Finish()
// (after fsync), so a reader never sees a half-written card under <path>; if
// the sink is destroyed without Finish() the partial file is removed.
// FileSource reads with pread; its size is the file's size at open.
//
// Ownership: each owns its file descriptor. Thread safety: one thread at a time.
#ifndef QKVSHARE_CACHECARD_FILE_IO_H_
#define QKVSHARE_CACHECARD_FILE_IO_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cachecard/io.h"

namespace qkvshare::cachecard {

class FileSink final : public CardSink {
 public:
  // Creates "<path>.partial" (mode 0644 & ~umask, truncated).
  // Errors: from open(2), naming the path (e.g. NotFound, PermissionDenied).
  static absl::StatusOr<std::unique_ptr<FileSink>> Create(const std::string& path);
  ~FileSink() override;

  absl::Status Begin(uint64_t card_bytes) override;
  absl::Status Write(uint64_t offset, absl::Span<const uint8_t> data) override;
  absl::Status Finish() override;

 private:
  FileSink(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string partial_path() const { return path_ + ".partial"; }

  std::string path_;
  int fd_;
  bool finished_ = false;
};

class FileSource final : public CardSource {
 public:
  // Opens a regular file for reading. Errors: from open(2)/fstat(2) naming the
  // path; InvalidArgument if it is not a regular file.
  static absl::StatusOr<std::unique_ptr<FileSource>> Open(const std::string& path);
  ~FileSource() override;

  uint64_t size() const override { return size_; }
  absl::Status Read(uint64_t offset, absl::Span<uint8_t> out) override;

 private:
  FileSource(std::string path, int fd, uint64_t size)
      : path_(std::move(path)), fd_(fd), size_(size) {}

  std::string path_;
  int fd_;
  uint64_t size_;
};

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_FILE_IO_H_

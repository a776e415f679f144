// File: cachecard/io.h
// -----------------------------------------------------------------------------
// Where card bytes go and come from, kept apart from the format (like
// llama.cpp's llama_io_write_i / llama_io_read_i). Writers (BuildCard,
// Flatten, CopyCard) and readers talk only to these interfaces:
//
//   CardSink   <- CountingSink (sizes only), BufferSink (owned memory),
//                 FileSink (cachecard/file_io.h), the shm store's segment sink
//   CardSource <- BufferSource (memory), FileSource (cachecard/file_io.h)
//
// Sink protocol (REQUIRES order): Begin(card_bytes) once -> any number of
// Window()/Write() calls covering every byte of [0, card_bytes) exactly once,
// in any order -> Finish(). A writer never reads back what it wrote.
//
// Thread safety: a sink or source is used by one thread at a time.
//
// Example (size of a card without encoding anything):
//   CountingSink counter;
//   QKV_RETURN_IF_ERROR(WriteCard(cache, n, ids, encoding, fp, prov, nullptr, counter));
//   uint64_t bytes = counter.card_bytes();
#ifndef QKVSHARE_CACHECARD_IO_H_
#define QKVSHARE_CACHECARD_IO_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace qkvshare::cachecard {

// An owned, 64-byte aligned, uninitialized byte buffer (card bytes in memory).
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  // Errors: ResourceExhausted when `bytes` cannot be allocated.
  static absl::StatusOr<AlignedBuffer> Allocate(uint64_t bytes);

  uint8_t* data() { return data_.get(); }
  const uint8_t* data() const { return data_.get(); }
  uint64_t size() const { return size_; }
  absl::Span<uint8_t> span() { return {data_.get(), static_cast<size_t>(size_)}; }
  absl::Span<const uint8_t> span() const { return {data_.get(), static_cast<size_t>(size_)}; }

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t, Free> data_;
  uint64_t size_ = 0;
};

// Destination of a card's bytes.
class CardSink {
 public:
  virtual ~CardSink() = default;
  // Announces the card's total size; called exactly once, first. Memory sinks
  // allocate here. Errors: ResourceExhausted (quota, memory), sink-specific.
  virtual absl::Status Begin(uint64_t card_bytes) = 0;
  // Writable memory for [offset, offset + bytes) when the sink is memory
  // backed (writers then encode in place, without a staging copy); an empty
  // span otherwise. REQUIRES: after Begin, range inside the card.
  virtual absl::Span<uint8_t> Window(uint64_t offset, uint64_t bytes) { return {}; }
  // Copies `data` to [offset, offset + data.size()).
  virtual absl::Status Write(uint64_t offset, absl::Span<const uint8_t> data) = 0;
  // True when the bytes are not kept (CountingSink): writers may then skip
  // encoding and call only Begin() and Finish().
  virtual bool counts_only() const { return false; }
  // Completes the card (flush, rename, seal). Errors: sink-specific.
  virtual absl::Status Finish() { return absl::OkStatus(); }
};

// Records the size of a card and the bytes written, keeps nothing.
class CountingSink final : public CardSink {
 public:
  absl::Status Begin(uint64_t card_bytes) override;
  absl::Status Write(uint64_t offset, absl::Span<const uint8_t> data) override;
  bool counts_only() const override { return true; }
  uint64_t card_bytes() const { return card_bytes_; }
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  uint64_t card_bytes_ = 0;
  uint64_t bytes_written_ = 0;
};

// Collects the card in an AlignedBuffer (allocated by Begin).
class BufferSink final : public CardSink {
 public:
  absl::Status Begin(uint64_t card_bytes) override;
  absl::Span<uint8_t> Window(uint64_t offset, uint64_t bytes) override;
  absl::Status Write(uint64_t offset, absl::Span<const uint8_t> data) override;
  // The bytes written so far; the sink is empty afterwards.
  AlignedBuffer TakeBuffer() { return std::move(buffer_); }

 private:
  AlignedBuffer buffer_;
};

// Source of a card's bytes.
class CardSource {
 public:
  virtual ~CardSource() = default;
  // Bytes available (the card's size if it is a valid card).
  virtual uint64_t size() const = 0;
  // Read-only memory for [offset, offset + bytes) when memory backed, else an
  // empty span. REQUIRES: range inside size().
  virtual absl::Span<const uint8_t> Window(uint64_t offset, uint64_t bytes) const { return {}; }
  // Copies [offset, offset + out.size()) into `out`.
  // Errors: DataLoss when the range is outside size() or the read comes up
  // short; sink-specific I/O errors.
  virtual absl::Status Read(uint64_t offset, absl::Span<uint8_t> out) = 0;
};

// A source over memory the caller keeps alive.
class BufferSource final : public CardSource {
 public:
  explicit BufferSource(absl::Span<const uint8_t> bytes) : bytes_(bytes) {}
  uint64_t size() const override { return bytes_.size(); }
  absl::Span<const uint8_t> Window(uint64_t offset, uint64_t bytes) const override;
  absl::Status Read(uint64_t offset, absl::Span<uint8_t> out) override;

 private:
  absl::Span<const uint8_t> bytes_;
};

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_IO_H_

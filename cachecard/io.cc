#include "cachecard/io.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace qkvshare::cachecard {
namespace {

constexpr uint64_t kBufferAlignment = 64;

bool InRange(uint64_t offset, uint64_t bytes, uint64_t size) {
  return offset <= size && bytes <= size - offset;
}

absl::Status OutOfBounds(absl::string_view what, uint64_t offset, uint64_t bytes, uint64_t size) {
  return absl::OutOfRangeError(
      absl::StrCat(what, ": [", offset, ", +", bytes, ") outside a card of ", size, " bytes"));
}

}  // namespace

void AlignedBuffer::Free::operator()(uint8_t* p) const { std::free(p); }

absl::StatusOr<AlignedBuffer> AlignedBuffer::Allocate(uint64_t bytes) {
  AlignedBuffer buffer;
  const uint64_t rounded = (bytes + kBufferAlignment - 1) / kBufferAlignment * kBufferAlignment;
  if (rounded < bytes || rounded > SIZE_MAX) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes"));
  }
  void* p = std::aligned_alloc(kBufferAlignment, rounded == 0 ? kBufferAlignment : rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " bytes"));
  }
  buffer.data_.reset(static_cast<uint8_t*>(p));
  buffer.size_ = bytes;
  return buffer;
}

absl::Status CountingSink::Begin(uint64_t card_bytes) {
  card_bytes_ = card_bytes;
  return absl::OkStatus();
}

absl::Status CountingSink::Write(uint64_t offset, absl::Span<const uint8_t> data) {
  if (!InRange(offset, data.size(), card_bytes_)) {
    return OutOfBounds("CountingSink::Write", offset, data.size(), card_bytes_);
  }
  bytes_written_ += data.size();
  return absl::OkStatus();
}

absl::Status BufferSink::Begin(uint64_t card_bytes) {
  absl::StatusOr<AlignedBuffer> buffer = AlignedBuffer::Allocate(card_bytes);
  if (!buffer.ok()) return buffer.status();
  buffer_ = std::move(*buffer);
  return absl::OkStatus();
}

absl::Span<uint8_t> BufferSink::Window(uint64_t offset, uint64_t bytes) {
  if (!InRange(offset, bytes, buffer_.size())) return {};
  return buffer_.span().subspan(offset, bytes);
}

absl::Status BufferSink::Write(uint64_t offset, absl::Span<const uint8_t> data) {
  if (!InRange(offset, data.size(), buffer_.size())) {
    return OutOfBounds("BufferSink::Write", offset, data.size(), buffer_.size());
  }
  if (!data.empty()) std::memcpy(buffer_.data() + offset, data.data(), data.size());
  return absl::OkStatus();
}

absl::Span<const uint8_t> BufferSource::Window(uint64_t offset, uint64_t bytes) const {
  if (!InRange(offset, bytes, bytes_.size())) return {};
  return bytes_.subspan(offset, bytes);
}

absl::Status BufferSource::Read(uint64_t offset, absl::Span<uint8_t> out) {
  if (!InRange(offset, out.size(), bytes_.size())) {
    return absl::DataLossError(absl::StrCat("read of [", offset, ", +", out.size(),
                                            ") past the end of ", bytes_.size(), " bytes"));
  }
  if (!out.empty()) std::memcpy(out.data(), bytes_.data() + offset, out.size());
  return absl::OkStatus();
}

}  // namespace qkvshare::cachecard

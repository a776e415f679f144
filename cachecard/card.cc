#include "cachecard/card.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "cachecard/format.h"
#include "cachecard/metadata_codec.h"

namespace qkvshare::cachecard {

absl::Status VerifySectionBytes(const CardMetadata& m, absl::Span<const uint8_t> card) {
  if (card.size() != m.card_bytes) {
    return absl::DataLossError(
        absl::StrCat("card of ", card.size(), " bytes, card_bytes is ", m.card_bytes));
  }
  uint64_t pos = m.metadata_bytes;
  for (size_t s = 0; s < m.segments.size(); ++s) {
    const SegmentInfo& seg = m.segments[s];
    for (size_t i = 0; i < seg.sections.size(); ++i) {
      const SectionRef& ref = seg.sections[i];
      for (uint64_t p = pos; p < ref.offset; ++p) {
        if (card[p] != 0) {
          return absl::DataLossError(absl::StrCat("padding byte at offset ", p, " before segment ",
                                                  s, " layer ", i / 2, i % 2 == 0 ? " K" : " V",
                                                  " section is not zero"));
        }
      }
      const uint64_t checksum = SectionChecksum(card.subspan(ref.offset, ref.bytes));
      if (checksum != ref.checksum) {
        return absl::DataLossError(absl::StrCat(
            "checksum of segment ", s, " layer ", i / 2, i % 2 == 0 ? " K" : " V", " section (",
            ref.bytes, " bytes at offset ", ref.offset, ") mismatch: stored ",
            absl::Hex(ref.checksum), ", computed ", absl::Hex(checksum)));
      }
      pos = ref.offset + ref.bytes;
    }
  }
  return absl::OkStatus();
}

Card::Card(absl::Span<const uint8_t> bytes, AlignedBuffer owned, std::function<void()> release,
           CardMetadata metadata)
    : bytes_(bytes),
      owned_(std::move(owned)),
      release_(std::move(release)),
      metadata_(std::move(metadata)) {}

Card::~Card() {
  if (release_) release_();
}

absl::StatusOr<CardPtr> Card::Create(absl::Span<const uint8_t> bytes, AlignedBuffer owned,
                                     std::function<void()> release, Verify verify) {
  absl::StatusOr<CardMetadata> m = ParseMetadata(bytes, bytes.size());
  absl::Status status = m.status();
  if (status.ok() && verify == Verify::kAll) status = VerifySectionBytes(*m, bytes);
  if (!status.ok()) {
    if (release) release();
    return status;
  }
  return CardPtr(new Card(bytes, std::move(owned), std::move(release), *std::move(m)));
}

absl::StatusOr<CardPtr> Card::FromBuffer(AlignedBuffer bytes, Verify verify) {
  const absl::Span<const uint8_t> view = bytes.span();
  return Create(view, std::move(bytes), nullptr, verify);
}

absl::StatusOr<CardPtr> Card::Copy(absl::Span<const uint8_t> bytes) {
  QKV_ASSIGN_OR_RETURN(AlignedBuffer buffer, AlignedBuffer::Allocate(bytes.size()));
  if (!bytes.empty()) std::memcpy(buffer.data(), bytes.data(), bytes.size());
  return FromBuffer(std::move(buffer));
}

absl::StatusOr<CardPtr> Card::FromMapping(absl::Span<const uint8_t> bytes,
                                          std::function<void()> release, Verify verify) {
  return Create(bytes, AlignedBuffer(), std::move(release), verify);
}

absl::Status Card::VerifySections() const { return VerifySectionBytes(metadata_, bytes_); }

}  // namespace qkvshare::cachecard

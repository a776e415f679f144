#include "cachecard/card_file.h"

#include <algorithm>
#include <vector>

#define XXH_STATIC_LINKING_ONLY  // XXH64_state_t on the stack
#include <xxhash.h>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "cachecard/file_io.h"
#include "cachecard/format.h"
#include "cachecard/metadata_codec.h"

namespace qkvshare::cachecard {
namespace {

constexpr uint64_t kChunkBytes = uint64_t{4} << 20;

absl::Status ChecksumError(size_t s, size_t i, const SectionRef& ref, uint64_t computed) {
  return absl::DataLossError(
      absl::StrCat("checksum of segment ", s, " layer ", i / 2, i % 2 == 0 ? " K" : " V",
                   " section (", ref.bytes, " bytes at offset ", ref.offset, ") mismatch: stored ",
                   absl::Hex(ref.checksum), ", computed ", absl::Hex(computed)));
}

// Streams one section from `source` to `sink`, returning its XXH64.
absl::StatusOr<uint64_t> CopySection(CardSource& source, CardSink& sink, const SectionRef& ref,
                                     std::vector<uint8_t>* staging) {
  absl::Span<uint8_t> window = sink.Window(ref.offset, ref.bytes);
  if (window.size() == ref.bytes) {  // read straight into the destination
    QKV_RETURN_IF_ERROR(source.Read(ref.offset, window));
    return SectionChecksum(window);
  }
  XXH64_state_t state;
  XXH64_reset(&state, 0);
  for (uint64_t done = 0; done < ref.bytes;) {
    const uint64_t n = std::min(kChunkBytes, ref.bytes - done);
    staging->resize(n);
    QKV_RETURN_IF_ERROR(source.Read(ref.offset + done, absl::MakeSpan(*staging)));
    XXH64_update(&state, staging->data(), n);
    QKV_RETURN_IF_ERROR(sink.Write(ref.offset + done, *staging));
    done += n;
  }
  return XXH64_digest(&state);
}

}  // namespace

absl::StatusOr<CardMetadata> CopyCard(CardSource& source, CardSink& sink) {
  const uint64_t size = source.size();
  std::vector<uint8_t> prefix(std::min<uint64_t>(size, sizeof(CardHeader)));
  QKV_RETURN_IF_ERROR(source.Read(0, absl::MakeSpan(prefix)));
  QKV_ASSIGN_OR_RETURN(const CardHeader header, ReadPreamble(prefix, size));
  std::vector<uint8_t> metadata(header.metadata_bytes);
  QKV_RETURN_IF_ERROR(source.Read(0, absl::MakeSpan(metadata)));
  QKV_ASSIGN_OR_RETURN(CardMetadata m, ParseMetadata(metadata, size));

  QKV_RETURN_IF_ERROR(sink.Begin(m.card_bytes));
  QKV_RETURN_IF_ERROR(sink.Write(0, metadata));
  std::vector<uint8_t> staging;
  uint64_t pos = m.metadata_bytes;
  for (size_t s = 0; s < m.segments.size(); ++s) {
    for (size_t i = 0; i < m.segments[s].sections.size(); ++i) {
      const SectionRef& ref = m.segments[s].sections[i];
      if (ref.offset > pos) {  // padding: < 64 bytes, must be zero
        uint8_t pad[kSectionAlignment];
        const absl::Span<uint8_t> gap(pad, ref.offset - pos);
        QKV_RETURN_IF_ERROR(source.Read(pos, gap));
        for (uint64_t k = 0; k < gap.size(); ++k) {
          if (gap[k] != 0) {
            return absl::DataLossError(
                absl::StrCat("padding byte at offset ", pos + k, " before segment ", s, " layer ",
                             i / 2, i % 2 == 0 ? " K" : " V", " section is not zero"));
          }
        }
        QKV_RETURN_IF_ERROR(sink.Write(pos, gap));
      }
      QKV_ASSIGN_OR_RETURN(const uint64_t checksum, CopySection(source, sink, ref, &staging));
      if (checksum != ref.checksum) return ChecksumError(s, i, ref, checksum);
      pos = ref.offset + ref.bytes;
    }
  }
  QKV_RETURN_IF_ERROR(sink.Finish());
  return m;
}

absl::Status ExportCard(const Card& card, const std::string& path) {
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<FileSink> sink, FileSink::Create(path));
  QKV_RETURN_IF_ERROR(sink->Begin(card.bytes().size()));
  QKV_RETURN_IF_ERROR(sink->Write(0, card.bytes()));
  return sink->Finish();
}

absl::StatusOr<CardPtr> ImportCard(const std::string& path) {
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<FileSource> source, FileSource::Open(path));
  BufferSink sink;
  absl::StatusOr<CardMetadata> m = CopyCard(*source, sink);
  if (!m.ok())
    return absl::Status(m.status().code(), absl::StrCat(path, ": ", m.status().message()));
  return Card::FromBuffer(sink.TakeBuffer(), Card::Verify::kMetadataOnly);
}

}  // namespace qkvshare::cachecard

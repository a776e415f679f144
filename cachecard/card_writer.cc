#include "cachecard/card_writer.h"

#include <vector>

#include "base/status_macros.h"
#include "cachecard/format.h"
#include "cachecard/metadata_codec.h"

namespace qkvshare::cachecard {

absl::Status WritePlannedCard(CardMetadata* m, const MetadataLayout& layout,
                              const SectionEncoder& encode, CardSink& sink) {
  QKV_RETURN_IF_ERROR(sink.Begin(m->card_bytes));
  if (sink.counts_only()) return sink.Finish();
  static constexpr uint8_t kZeros[kSectionAlignment] = {};
  std::vector<uint8_t> staging;
  uint64_t pos = m->metadata_bytes;
  for (size_t s = 0; s < m->segments.size(); ++s) {
    for (size_t i = 0; i < m->segments[s].sections.size(); ++i) {
      SectionRef& ref = m->segments[s].sections[i];
      if (ref.offset > pos) {
        QKV_RETURN_IF_ERROR(sink.Write(pos, absl::MakeConstSpan(kZeros, ref.offset - pos)));
      }
      absl::Span<uint8_t> out = sink.Window(ref.offset, ref.bytes);
      const bool in_place = out.size() == ref.bytes;
      if (!in_place) {
        staging.resize(ref.bytes);
        out = absl::MakeSpan(staging);
      }
      QKV_RETURN_IF_ERROR(encode(s, i, out));
      ref.checksum = SectionChecksum(out);
      if (!in_place) QKV_RETURN_IF_ERROR(sink.Write(ref.offset, out));
      pos = ref.offset + ref.bytes;
    }
  }
  std::vector<uint8_t> metadata(m->metadata_bytes);
  QKV_RETURN_IF_ERROR(EncodeMetadata(*m, layout, absl::MakeSpan(metadata)));
  QKV_RETURN_IF_ERROR(sink.Write(0, metadata));
  return sink.Finish();
}

}  // namespace qkvshare::cachecard

#include "cachecard/card_writer.h"

#include <vector>

#include "base/status_macros.h"
#include "cachecard/content_id.h"
#include "cachecard/format.h"
#include "cachecard/metadata_codec.h"
#include "cachecard/parallel.h"

namespace qkvshare::cachecard {

CardId PendingCardId() {
  CardId id;
  id.bytes.fill(0xff);
  return id;
}

absl::Status WritePlannedCard(CardMetadata* m, const MetadataLayout& layout,
                              const SectionEncoder& encode, size_t first_own_segment,
                              CardSink& sink) {
  QKV_RETURN_IF_ERROR(sink.Begin(m->card_bytes));
  if (sink.counts_only()) return sink.Finish();
  static constexpr uint8_t kZeros[kSectionAlignment] = {};
  // Pass 1, on this thread (a sink is single-threaded): the padding, and a
  // window for every section the sink exposes; a section it cannot expose is
  // encoded here through a staging buffer and written.
  // SHA-256 of every section, in card order, for the content-derived id.
  std::vector<Sha256> digests;
  struct InPlace {
    SectionRef* ref;
    Sha256* digest;
    size_t segment;
    size_t index;
    absl::Span<uint8_t> out;
  };
  std::vector<InPlace> in_place;
  uint64_t in_place_bytes = 0;
  std::vector<uint8_t> staging;
  uint64_t pos = m->metadata_bytes;
  size_t num_sections = 0;
  for (const SegmentInfo& seg : m->segments) num_sections += seg.sections.size();
  digests.resize(num_sections);
  size_t next = 0;
  for (size_t s = 0; s < m->segments.size(); ++s) {
    for (size_t i = 0; i < m->segments[s].sections.size(); ++i) {
      SectionRef& ref = m->segments[s].sections[i];
      Sha256* digest = &digests[next++];
      if (ref.offset > pos) {
        QKV_RETURN_IF_ERROR(sink.Write(pos, absl::MakeConstSpan(kZeros, ref.offset - pos)));
      }
      pos = ref.offset + ref.bytes;
      absl::Span<uint8_t> out = sink.Window(ref.offset, ref.bytes);
      if (out.size() == ref.bytes) {
        in_place.push_back({&ref, digest, s, i, out});
        in_place_bytes += ref.bytes;
        continue;
      }
      staging.resize(ref.bytes);
      out = absl::MakeSpan(staging);
      QKV_RETURN_IF_ERROR(encode(s, i, out));
      ref.checksum = SectionChecksum(out);
      *digest = Sha256Of(out);
      QKV_RETURN_IF_ERROR(sink.Write(ref.offset, out));
    }
  }
  // Pass 2: the windowed sections, encoded in place on a few threads.
  QKV_RETURN_IF_ERROR(ParallelForSections(
      in_place.size(), SectionThreads(in_place_bytes), [&](size_t j) -> absl::Status {
        const InPlace& job = in_place[j];
        QKV_RETURN_IF_ERROR(encode(job.segment, job.index, job.out));
        job.ref->checksum = SectionChecksum(job.out);
        *job.digest = Sha256Of(job.out);
        return absl::OkStatus();
      }));
  const CardId id = ContentCardId(*m, digests);
  m->provenance.card_id = id;
  for (size_t s = first_own_segment; s < m->segments.size(); ++s) {
    m->segments[s].origin_card_id = id;
  }
  std::vector<uint8_t> metadata(m->metadata_bytes);
  QKV_RETURN_IF_ERROR(EncodeMetadata(*m, layout, absl::MakeSpan(metadata)));
  QKV_RETURN_IF_ERROR(sink.Write(0, metadata));
  return sink.Finish();
}

}  // namespace qkvshare::cachecard

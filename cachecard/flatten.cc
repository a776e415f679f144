#include "cachecard/flatten.h"

#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "cachecard/card_writer.h"

namespace qkvshare::cachecard {

absl::StatusOr<CardMetadata> WriteFlatCard(const Card& leaf, const CardResolver* parents,
                                           const FlattenOptions& options, CardSink& sink) {
  QKV_ASSIGN_OR_RETURN(std::vector<const Card*> chain, ResolveChain(leaf, parents));
  for (const Card* card : chain) QKV_RETURN_IF_ERROR(card->VerifySections());

  CardMetadata m = leaf.metadata();
  m.parent_id = CardId();
  m.first_token = 0;
  m.num_tokens = leaf.metadata().total_tokens();
  m.provenance.card_id = PendingCardId();  // derived from the content by WritePlannedCard
  m.provenance.created_unix_ms = options.created_unix_ms;
  m.segments.clear();
  // source[k] = (card, segment index) of the flat card's segment k.
  std::vector<std::pair<const Card*, size_t>> source;
  for (const Card* card : chain) {
    const std::vector<SegmentInfo>& segments = card->metadata().segments;
    for (size_t s = 0; s < segments.size(); ++s) {
      m.segments.push_back(segments[s]);
      source.emplace_back(card, s);
    }
  }
  m.avg_bits = AverageBits(m.segments);
  absl::StatusOr<MetadataLayout> layout = PlanLayout(&m);
  if (!layout.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("Flatten: ", layout.status().message()));
  }
  auto copy = [&](size_t s, size_t i, absl::Span<uint8_t> out) {
    const auto& [card, index] = source[s];
    const absl::Span<const uint8_t> in =
        card->section(card->metadata().segments[index].sections[i]);
    std::memcpy(out.data(), in.data(), in.size());
    return absl::OkStatus();
  };
  QKV_RETURN_IF_ERROR(
      WritePlannedCard(&m, *layout, copy, /*first_own_segment=*/m.segments.size(), sink));
  return m;
}

absl::StatusOr<CardPtr> Flatten(const Card& leaf, const CardResolver* parents,
                                const FlattenOptions& options) {
  BufferSink sink;
  QKV_RETURN_IF_ERROR(WriteFlatCard(leaf, parents, options, sink).status());
  return Card::FromBuffer(sink.TakeBuffer(), Card::Verify::kMetadataOnly);
}

}  // namespace qkvshare::cachecard

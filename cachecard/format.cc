#include "cachecard/format.h"

#define XXH_STATIC_LINKING_ONLY  // XXH64_state_t on the stack
#include <xxhash.h>

namespace qkvshare::cachecard {

uint64_t SectionChecksum(absl::Span<const uint8_t> bytes) {
  return XXH64(bytes.data(), bytes.size(), 0);
}

uint64_t HeaderChecksum(absl::Span<const uint8_t> metadata) {
  constexpr size_t kField = offsetof(CardHeader, header_checksum);
  constexpr uint8_t kZero[sizeof(uint64_t)] = {};
  XXH64_state_t state;
  XXH64_reset(&state, 0);
  XXH64_update(&state, metadata.data(), kField);
  XXH64_update(&state, kZero, sizeof kZero);
  XXH64_update(&state, metadata.data() + kField + sizeof kZero,
               metadata.size() - kField - sizeof kZero);
  return XXH64_digest(&state);
}

}  // namespace qkvshare::cachecard

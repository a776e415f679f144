// File: bench/handoff_bench_run.h
// -----------------------------------------------------------------------------
// One timed handoff of a context from a sending agent to a receiving agent
// (two Sequences on one shared Model, as the daemon runs them), up to the
// receiver's first generated token: either re-prefill of the text, or a
// CacheCard (full or quantized) built into the shared-memory CardStore,
// opened read-only by the receiver and injected. For bench/handoff_bench;
// the same calls as daemon/handoff/handoff.cc, without the gRPC/task machinery.
//
// Stages of a card handoff (wall-clock ms, steady_clock):
//   importance  sender's attention capture export + quant::TokenImportance
//               (adaptive widths only; 0 for full and 16-bit cards)
//   alloc       quant::AllocateBits (0 for full cards)
//   size        the daemon's size check before building: WriteCard into a
//               CountingSink (layout only, no encoding)
//   encode      CardStore::Build: validation, quantization, checksums, metadata
//               written straight into a new shm segment (creation,
//               posix_fallocate and page faults included), sealed read-only
//   map         receiver: OpenSharedCard(segment name, Verify::kMetadataOnly):
//               shm_open, fstat, mmap(PROT_READ), metadata parse (the section
//               checksums are verified by InjectCard, once)
//   inject      InjectCard (fingerprint, shape, every section's XXH64,
//               dequantization into the receiver's KV cache) +
//               Sequence::SetTokensAfterInjection
//   first       receiver: Append(instruction ids) with last-position logits +
//               greedy argmax: the first generated token
// Re-prefill has one stage: Append(context ids + instruction ids) + argmax.
// TTFT = sum of the stages (one clock read per stage boundary).
//
// Thread safety: none (drives two Sequences and a store from one thread).
#ifndef QKVSHARE_BENCH_HANDOFF_BENCH_RUN_H_
#define QKVSHARE_BENCH_HANDOFF_BENCH_RUN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "agents/model_config.h"
#include "agents/sequence.h"
#include "cachecard/shm/card_store.h"

namespace qkvshare::bench {

// How the context reaches the receiver.
struct HandoffMode {
  // kSession: the receiver continues from a full card built before the
  // clock starts (a kept card of an earlier task, SubmitTaskRequest.
  // context_card): TTFT = map + inject + first.
  enum class Kind { kReprefill, kFull, kCard, kSession };
  Kind kind = Kind::kReprefill;
  // kCard: average code bits per element (the controller's budget), [2, 8] or
  // 16; widths are adaptive (importance-driven) below 16.
  double bits = 0;

  // "reprefill", "full", "card" or "session" (the CSV's `mode` column).
  std::string Name() const;
  // "reprefill", "full", "session", "card16", "card4", "card3" (flag and
  // table labels).
  std::string Label() const;
  // Parses a Label(). Errors: InvalidArgument naming the label.
  static absl::StatusOr<HandoffMode> Parse(const std::string& label);
};

// Card parameters, as the daemon's handoff config (daemon/config/config.h).
struct CardParams {
  int group_size = 32;        // keys per-channel, values per-token
  int importance_window = 4;  // last query rows averaged per head
};

// One handoff's measurements. Stage *_ms are wall clock; *_cpu_ms the CPU
// time of the calling thread over the stage (encode and inject of cards above
// 4 MiB also run on helper threads, cachecard/parallel.h, and the forward
// pass in `first` on the runtime's worker threads: ttft_cpu_ms is the
// process's CPU time over the whole handoff).
struct HandoffSample {
  double importance_ms = 0, importance_cpu_ms = 0;
  double alloc_ms = 0, alloc_cpu_ms = 0;
  double size_ms = 0, size_cpu_ms = 0;
  double encode_ms = 0, encode_cpu_ms = 0;
  double map_ms = 0, map_cpu_ms = 0;
  double inject_ms = 0, inject_cpu_ms = 0;
  double first_ms = 0, first_cpu_ms = 0;  // re-prefill: the whole prefill + first token
  double ttft_ms = 0;
  double ttft_cpu_ms = 0;    // process CPU time (all threads) over the handoff
  int64_t minor_faults = 0;  // process minor page faults over the handoff
  int32_t first_token = -1;
  uint64_t card_bytes = 0;  // 0 for re-prefill
  double avg_bits = 0;      // the card's mean code bits per element

  double build_ms() const { return importance_ms + alloc_ms + size_ms + encode_ms; }
  double build_cpu_ms() const {
    return importance_cpu_ms + alloc_cpu_ms + size_cpu_ms + encode_cpu_ms;
  }
};

// Runs one handoff of the sender's whole context (sender.length() tokens,
// prefilled with attention capture on for adaptive cards) to `receiver`,
// which is Reset() first (untimed; it keeps its allocated KV cache, like a
// pooled daemon agent), then receives the context and `instruction` and
// samples its first token greedily. Card segments are removed from `store`
// after the first token (untimed). The sender is not modified.
// Errors: from the runtime, the controller, the card store and InjectCard.
absl::StatusOr<HandoffSample> RunHandoff(const HandoffMode& mode, const CardParams& params,
                                         agents::Sequence& sender, agents::Sequence& receiver,
                                         absl::Span<const int32_t> instruction,
                                         cachecard::shm::CardStore& store, absl::BitGen& gen);

// A benchmark context: BOS, then a deterministic pseudo-random sequence of
// ids in [3, min(vocab, 512)) (SplitMix64 of `seed` + position; ids 0..2 are
// the stories260K tokenizer's unk/bos/eos). `n` >= 1 ids.
std::vector<int32_t> ContextIds(const agents::ModelConfig& config, int64_t n, uint64_t seed);

}  // namespace qkvshare::bench

#endif  // QKVSHARE_BENCH_HANDOFF_BENCH_RUN_H_

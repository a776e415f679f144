#include "bench/handoff_bench_run.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agents/sampler.h"
#include "base/status_macros.h"
#include "cachecard/build.h"
#include "cachecard/inject.h"
#include "cachecard/io.h"
#include "cachecard/shm/shm_segment.h"
#include "quant/controller.h"
#include "quant/importance.h"

namespace qkvshare::bench {
namespace {

using Clock = std::chrono::steady_clock;

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double CpuMs(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return 1e3 * static_cast<double>(ts.tv_sec) + 1e-6 * static_cast<double>(ts.tv_nsec);
}
double ProcessCpuMs() { return CpuMs(CLOCK_PROCESS_CPUTIME_ID); }
double ThreadCpuMs() { return CpuMs(CLOCK_THREAD_CPUTIME_ID); }

int64_t MinorFaults() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

// Stage boundaries: Lap() returns wall ms since the previous one and stores
// the calling thread's CPU ms over the same interval in *thread_cpu_ms.
class Laps {
 public:
  Laps() : last_(Clock::now()), start_(last_), last_cpu_(ThreadCpuMs()) {}
  double Lap(double* thread_cpu_ms) {
    const Clock::time_point now = Clock::now();
    const double cpu = ThreadCpuMs();
    const double ms = MsBetween(last_, now);
    *thread_cpu_ms = cpu - last_cpu_;
    last_ = now;
    last_cpu_ = cpu;
    return ms;
  }
  double Total() const { return MsBetween(start_, last_); }

 private:
  Clock::time_point last_;
  Clock::time_point start_;
  double last_cpu_;
};

// The card's encoding as the daemon's Handoff::Send (daemon/handoff/handoff.cc) makes
// it: importance from the sender's attention capture, then the controller.
absl::StatusOr<cachecard::CardEncoding> Encoding(const HandoffMode& mode, const CardParams& params,
                                                 const agents::Sequence& sender, Laps& laps,
                                                 HandoffSample& s) {
  if (mode.kind == HandoffMode::Kind::kFull) return cachecard::CardEncoding::Full();
  quant::AllocationRequest req;
  req.num_tokens = sender.length();
  req.avg_bits = mode.bits;
  req.policy = quant::AllocationPolicy::kUniform;  // 16 bits: every token raw fp16
  std::vector<float> importance;
  if (mode.bits != 16) {
    QKV_ASSIGN_OR_RETURN(agents::AttentionCapture cap, sender.GetAttentionCapture());
    QKV_ASSIGN_OR_RETURN(
        importance, quant::TokenImportance({cap.probs.data(), cap.num_layers, cap.num_kv_heads,
                                            static_cast<int>(cap.rows), cap.context},
                                           {params.importance_window, quant::HeadReduction::kMax}));
    if (static_cast<int64_t>(importance.size()) != sender.length()) {
      return absl::InternalError(absl::StrCat("importance has ", importance.size(), " scores for ",
                                              sender.length(), " tokens"));
    }
    req.policy = quant::AllocationPolicy::kAdaptive;
    req.importance = importance;
  }
  s.importance_ms = laps.Lap(&s.importance_cpu_ms);
  QKV_ASSIGN_OR_RETURN(quant::BitPlan plan, quant::AllocateBits(req));
  s.alloc_ms = laps.Lap(&s.alloc_cpu_ms);
  return cachecard::CardEncoding::Quantized(std::move(plan),
                                            {quant::GroupAxis::kPerChannel, params.group_size},
                                            {quant::GroupAxis::kPerToken, params.group_size});
}

// What a card handoff leaves to release after the clock stops.
struct CardLeftovers {
  cachecard::CardId id;
  cachecard::shm::CardHandle handle;  // the store's (sender's) reference
  cachecard::CardPtr mapped;          // the receiver's read-only mapping
};

absl::Status ReceiveCard(const cachecard::shm::CardStore& store, agents::Sequence& receiver,
                         absl::Span<const int32_t> instruction, Laps& laps, HandoffSample& s,
                         CardLeftovers& left);

absl::Status CardHandoff(const HandoffMode& mode, const CardParams& params,
                         const agents::Sequence& sender, agents::Sequence& receiver,
                         absl::Span<const int32_t> instruction, cachecard::shm::CardStore& store,
                         absl::BitGen& gen, Laps& laps, HandoffSample& s, CardLeftovers& left) {
  // Sender: build the card straight into a new shared-memory segment.
  QKV_ASSIGN_OR_RETURN(cachecard::CardEncoding enc, Encoding(mode, params, sender, laps, s));
  cachecard::Provenance prov;  // the id is content-derived
  prov.source_agent = "sender";
  prov.created_unix_ms = absl::ToUnixMillis(absl::Now());
  prov.quant_policy = mode.kind == HandoffMode::Kind::kFull ? "full"
                      : mode.bits == 16                     ? "uniform"
                                                            : "adaptive";
  prov.budget_bits = mode.kind == HandoffMode::Kind::kFull ? 0 : mode.bits;
  const agents::KvCache& cache = sender.kv_cache();
  const cachecard::ModelFingerprint& fp = sender.model().fingerprint().bytes;
  cachecard::CountingSink counter;  // the daemon's size check before building
  QKV_RETURN_IF_ERROR(cachecard::WriteCard(cache, sender.length(), sender.token_ids(), enc, fp,
                                           prov, nullptr, counter)
                          .status());
  s.size_ms = laps.Lap(&s.size_cpu_ms);
  QKV_ASSIGN_OR_RETURN(left.handle, store.Build(cache, sender.length(), sender.token_ids(), enc, fp,
                                                prov, /*parent=*/nullptr));
  left.id = left.handle->id();  // content-derived: not prov.card_id
  s.encode_ms = laps.Lap(&s.encode_cpu_ms);
  return ReceiveCard(store, receiver, instruction, laps, s, left);
}

absl::Status ReceiveCard(const cachecard::shm::CardStore& store, agents::Sequence& receiver,
                         absl::Span<const int32_t> instruction, Laps& laps, HandoffSample& s,
                         CardLeftovers& left) {
  // Receiver: map the segment by name, read-only, as another process would.
  QKV_ASSIGN_OR_RETURN(left.mapped,
                       cachecard::shm::OpenSharedCard(store.SegmentName(left.id),
                                                      cachecard::Card::Verify::kMetadataOnly));
  const cachecard::Card& card = *left.mapped;
  s.map_ms = laps.Lap(&s.map_cpu_ms);

  const agents::Model& model = receiver.model();
  QKV_RETURN_IF_ERROR(
      cachecard::InjectCard(card, nullptr, model.fingerprint().bytes, &receiver.kv_cache()));
  QKV_RETURN_IF_ERROR(receiver.SetTokensAfterInjection(card.metadata().token_ids));
  s.inject_ms = laps.Lap(&s.inject_cpu_ms);

  QKV_ASSIGN_OR_RETURN(agents::LogitsView lv,
                       receiver.Append(instruction, agents::LogitsMode::kLast));
  s.first_token = agents::ArgMax(lv.row(0));
  s.first_ms = laps.Lap(&s.first_cpu_ms);

  s.card_bytes = card.metadata().card_bytes;
  s.avg_bits = card.metadata().avg_bits;
  return absl::OkStatus();
}

}  // namespace

std::string HandoffMode::Name() const {
  switch (kind) {
    case Kind::kReprefill:
      return "reprefill";
    case Kind::kFull:
      return "full";
    case Kind::kCard:
      return "card";
    case Kind::kSession:
      return "session";
  }
  return "?";
}

std::string HandoffMode::Label() const {
  return kind == Kind::kCard ? absl::StrCat("card", bits) : Name();
}

absl::StatusOr<HandoffMode> HandoffMode::Parse(const std::string& label) {
  if (label == "reprefill") return HandoffMode{Kind::kReprefill, 0};
  if (label == "full") return HandoffMode{Kind::kFull, 0};
  if (label == "session") return HandoffMode{Kind::kSession, 0};
  absl::string_view rest = label;
  double bits = 0;
  if (absl::ConsumePrefix(&rest, "card") && absl::SimpleAtod(rest, &bits) &&
      ((bits >= 2 && bits <= 8) || bits == 16)) {
    return HandoffMode{Kind::kCard, bits};
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "mode '", label, "': expected reprefill, full, session or card<bits> (2..8 or 16)"));
}

absl::StatusOr<HandoffSample> RunHandoff(const HandoffMode& mode, const CardParams& params,
                                         agents::Sequence& sender, agents::Sequence& receiver,
                                         absl::Span<const int32_t> instruction,
                                         cachecard::shm::CardStore& store, absl::BitGen& gen) {
  receiver.Reset();
  HandoffSample s;
  CardLeftovers left;
  if (mode.kind == HandoffMode::Kind::kSession) {
    // Untimed: the earlier task kept its context as a full card.
    cachecard::Provenance prov;
    prov.source_agent = "session";
    QKV_ASSIGN_OR_RETURN(
        left.handle,
        store.Build(sender.kv_cache(), sender.length(), sender.token_ids(),
                    cachecard::CardEncoding::Full(), sender.model().fingerprint().bytes, prov,
                    /*parent=*/nullptr));
    left.id = left.handle->id();
  }
  const double cpu0 = ProcessCpuMs();
  const int64_t faults0 = MinorFaults();
  Laps laps;
  if (mode.kind == HandoffMode::Kind::kReprefill) {
    std::vector<int32_t> prompt = sender.token_ids();
    prompt.insert(prompt.end(), instruction.begin(), instruction.end());
    QKV_ASSIGN_OR_RETURN(agents::LogitsView lv, receiver.Append(prompt, agents::LogitsMode::kLast));
    s.first_token = agents::ArgMax(lv.row(0));
    s.first_ms = laps.Lap(&s.first_cpu_ms);
  } else {
    absl::Status st =
        mode.kind == HandoffMode::Kind::kSession
            ? ReceiveCard(store, receiver, instruction, laps, s, left)
            : CardHandoff(mode, params, sender, receiver, instruction, store, gen, laps, s, left);
    if (!st.ok()) {
      left.mapped.reset();
      left.handle = cachecard::shm::CardHandle();
      store.Remove(left.id).IgnoreError();  // may not have been stored
      return st;
    }
  }
  s.ttft_ms = laps.Total();
  s.ttft_cpu_ms = ProcessCpuMs() - cpu0;
  s.minor_faults = MinorFaults() - faults0;
  if (left.handle) {  // untimed: unmap and unlink the card
    left.mapped.reset();
    left.handle = cachecard::shm::CardHandle();
    QKV_RETURN_IF_ERROR(store.Remove(left.id));
  }
  return s;
}

namespace {
uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace

std::vector<int32_t> ContextIds(const agents::ModelConfig& config, int64_t n, uint64_t seed) {
  const int64_t hi = std::min<int64_t>(config.vocab_size, 512);
  std::vector<int32_t> ids(n);
  ids[0] = config.bos_token_id.value_or(1);
  for (int64_t i = 1; i < n; ++i) {
    ids[i] = static_cast<int32_t>(3 + SplitMix64(seed + i) % static_cast<uint64_t>(hi - 3));
  }
  return ids;
}

}  // namespace qkvshare::bench

// fanout_bench: fan-out of one context to 3 agents, the graph executor's
// parallel step. Total time from the end of the sender's step to all three
// receivers' first tokens:
//   card       the daemon's Handoff::Send builds ONE CacheCard of the context
//              (4-bit adaptive; --bits) into a shared-memory CardStore, then
//              each receiver Handoff::Receive-s it (inject) and prefills the
//              instruction up to its first token (greedy);
//   reprefill  each receiver prefills context + instruction itself.
// The receivers run one after another on this thread (the machine's cores are
// shared by all three either way), so the total is the sum of three TTFTs
// plus, for card, the one build. Rounds alternate the order of the two
// modes; the table gives medians of --reps rounds (after --warmup) and the
// ratio of medians, measured in the same run.
//
// Model: --model (an HF directory), else a random smollm-135m (30 layers,
// hidden 576, 9 heads, 3 kv heads, vocab 49152; weights from
// agents/testing/random_llama.h) written to a temp directory. The context is
// --context ids (bench/handoff_bench_run.h ContextIds), the instruction 8 ids.
//
// Usage:
//   bazel build //bench:fanout_bench && bazel-bin/bench/fanout_bench --reps=5
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agents/compute_threads.h"
#include "agents/generator.h"
#include "agents/testing/random_llama.h"
#include "base/cpu_info.h"
#include "base/status_macros.h"
#include "bench/handoff_bench_run.h"
#include "cachecard/shm/card_store.h"
#include "daemon/agent_pool.h"
#include "daemon/config/config.h"
#include "daemon/handoff/handoff.h"
#include "daemon/stats.h"

ABSL_FLAG(std::string, model, "", "HF model directory (default: write a random smollm-135m)");
ABSL_FLAG(std::string, dtype, "f32", "compute dtype: f32 or bf16");
ABSL_FLAG(int, context, 1024, "context tokens handed to the 3 agents");
ABSL_FLAG(double, bits, 4, "card bits per element (2..8, or 16)");
ABSL_FLAG(int, reps, 5, "timed rounds");
ABSL_FLAG(int, warmup, 1, "untimed rounds");
ABSL_FLAG(int, threads, 2, "intra-op threads");

namespace qkvshare::bench {
namespace {

using daemon::Agent;
using daemon::AgentLease;
using daemon::HandedContext;
using daemon::Handoff;

constexpr int kReceivers = 3;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

absl::Status FirstToken(Agent& agent, const std::vector<int32_t>& prompt) {
  agents::GenerateOptions opts;
  opts.max_new_tokens = 1;
  return agents::Generate(*agent.sequence, prompt, opts).status();
}

struct Round {
  double total_ms = 0;
  double build_ms = 0;  // card only
  int cards_built = 0, injects = 0;
};

absl::StatusOr<Round> RunCard(const Handoff& handoff, daemon::Stats& stats, Agent& sender,
                              const daemon::HandoffConfig& h, std::vector<AgentLease>& receivers,
                              const std::vector<int32_t>& instruction) {
  const int64_t built0 = stats.Get(daemon::Stats::kCardsBuilt);
  const int64_t injected0 = stats.Get(daemon::Stats::kCardsInjected);
  for (AgentLease& r : receivers) r->sequence->Reset();  // untimed, as a pooled agent
  const absl::Time t0 = absl::Now();
  HandedContext ctx = handoff.Send(sender, h, nullptr, {0, 1}, "bench");
  if (!ctx.card) return absl::InternalError("card build failed: " + ctx.card_fallback_reason);
  Round out;
  out.build_ms = ctx.card_build_ms;
  for (AgentLease& r : receivers) {
    QKV_ASSIGN_OR_RETURN(daemon::Received in, handoff.Receive(*r, ctx, instruction, "bench"));
    if (!in.injected) return absl::InternalError("not injected: " + in.stats.fallback_reason());
    QKV_RETURN_IF_ERROR(FirstToken(*r, in.prompt));
  }
  out.total_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
  out.cards_built = static_cast<int>(stats.Get(daemon::Stats::kCardsBuilt) - built0);
  out.injects = static_cast<int>(stats.Get(daemon::Stats::kCardsInjected) - injected0);
  return out;
}

absl::StatusOr<Round> RunReprefill(Agent& sender, std::vector<AgentLease>& receivers,
                                   const std::vector<int32_t>& instruction) {
  for (AgentLease& r : receivers) r->sequence->Reset();
  std::vector<int32_t> prompt = sender.sequence->token_ids();
  prompt.insert(prompt.end(), instruction.begin(), instruction.end());
  const absl::Time t0 = absl::Now();
  for (AgentLease& r : receivers) QKV_RETURN_IF_ERROR(FirstToken(*r, prompt));
  Round out;
  out.total_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
  return out;
}

absl::Status Main() {
  std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) {
    agents::testing::RandomLlamaSpec spec;  // smollm-135m's shape
    spec.hidden = 576;
    spec.layers = 30;
    spec.heads = 9;
    spec.kv_heads = 3;
    spec.intermediate = 1536;
    spec.vocab = 49152;
    spec.max_pos = 2048;
    spec.rope_theta = 10000.0;
    spec.tie = true;
    model = agents::testing::TempDir("fanout_smollm135m");
    std::fprintf(stderr, "writing a random smollm-135m to %s\n", model.c_str());
    QKV_RETURN_IF_ERROR(agents::testing::WriteRandomLlama(model, spec));
  }
  const std::string yaml = absl::StrCat(
      "listen: unix:///tmp/unused.sock\nmodels:\n  m: {path: ", model,
      ", dtype: ", absl::GetFlag(FLAGS_dtype), ", threads: ", absl::GetFlag(FLAGS_threads),
      "}\nagents:\n  sender: {model: m}\n  a: {model: m}\n  b: {model: m}\n  c: {model: m}\n");
  QKV_ASSIGN_OR_RETURN(daemon::DaemonConfig config,
                       daemon::ParseDaemonConfig(yaml, "/tmp/fanout_bench.yaml"));
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<daemon::AgentPool> pool, daemon::AgentPool::Create(config));
  cachecard::shm::CardStoreOptions so;
  so.instance = absl::StrCat("fanoutbench", getpid());
  so.quota_bytes = uint64_t{2} << 30;
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<cachecard::shm::CardStore> store,
                       cachecard::shm::CardStore::Create(so));
  daemon::Stats stats;
  Handoff handoff(store.get(), &stats, config.limits);

  auto none = [] { return absl::OkStatus(); };
  QKV_ASSIGN_OR_RETURN(AgentLease sender, pool->Acquire("sender", none));
  std::vector<AgentLease> receivers;
  for (const char* name : {"a", "b", "c"}) {
    QKV_ASSIGN_OR_RETURN(AgentLease r, pool->Acquire(name, none));
    receivers.push_back(std::move(r));
  }
  daemon::HandoffConfig h;
  h.bits = absl::GetFlag(FLAGS_bits);
  const agents::ModelConfig& mc = sender->model->config();
  const std::vector<int32_t> ids = ContextIds(mc, absl::GetFlag(FLAGS_context), 7);
  const std::vector<int32_t> instruction = ContextIds(mc, 9, 99);  // 8 ids after the BOS
  const std::vector<int32_t> inst(instruction.begin() + 1, instruction.end());
  // The sender's step: the context in its cache with attention capture on.
  Handoff::PrepareSender(*sender->sequence, &h);
  QKV_RETURN_IF_ERROR(sender->sequence->Append(ids, agents::LogitsMode::kNone).status());

  std::vector<double> card_ms, re_ms, build_ms;
  Round last_card;
  const int warmup = absl::GetFlag(FLAGS_warmup), reps = absl::GetFlag(FLAGS_reps);
  for (int round = 0; round < warmup + reps; ++round) {
    Round c, r;
    for (int k = 0; k < 2; ++k) {
      if ((k + round) % 2 == 0) {
        QKV_ASSIGN_OR_RETURN(c, RunCard(handoff, stats, *sender, h, receivers, inst));
      } else {
        QKV_ASSIGN_OR_RETURN(r, RunReprefill(*sender, receivers, inst));
      }
    }
    std::fprintf(stderr, "round %d: card %.1f ms (build %.1f), reprefill %.1f ms\n", round,
                 c.total_ms, c.build_ms, r.total_ms);
    if (round < warmup) continue;
    card_ms.push_back(c.total_ms);
    build_ms.push_back(c.build_ms);
    re_ms.push_back(r.total_ms);
    last_card = c;
  }
  std::printf("# fanout_bench: %d-token context to %d agents, total time to all first tokens\n",
              absl::GetFlag(FLAGS_context), kReceivers);
  std::printf("# %s | compute threads %d | model %s (%s)\n", CpuSummary().c_str(),
              agents::ComputeThreads(), model.c_str(), absl::GetFlag(FLAGS_dtype).c_str());
  std::printf("# medians of %d rounds (%d warm-up)\n\n", reps, warmup);
  std::printf("| mode | cards built | injects | total ms (median) | card build ms |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: |\n");
  std::printf("| card %.0f-bit, 1 card -> %d injects | %d | %d | %.1f | %.1f |\n", h.bits,
              kReceivers, last_card.cards_built, last_card.injects, Median(card_ms),
              Median(build_ms));
  std::printf("| %d re-prefills | 0 | 0 | %.1f | - |\n", kReceivers, Median(re_ms));
  std::printf("\nratio (re-prefill / card): %.2fx\n", Median(re_ms) / Median(card_ms));
  return absl::OkStatus();
}

}  // namespace
}  // namespace qkvshare::bench

int main(int argc, char** argv) {
  // Before anything loads libgomp's settings (agents/compute_threads.h): without it
  // libgomp's long default spin steals the 2 cores from OpenBLAS and the re-prefill
  // side ran ~4x slower than in handoff_bench.
  qkvshare::agents::ReexecWithShortOpenMpSpin(argv);
  absl::ParseCommandLine(argc, argv);
  qkvshare::agents::SetComputeThreads(absl::GetFlag(FLAGS_threads));
  absl::Status s = qkvshare::bench::Main();
  if (!s.ok()) {
    std::fprintf(stderr, "fanout_bench: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

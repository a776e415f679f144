#include "daemon/handoff/handoff.h"

#include <memory>
#include <string>
#include <vector>

#include "agents/generator.h"
#include "daemon/testing/stories_env.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::daemon {
namespace {

using ::testing::HasSubstr;
using testing::StoriesEnv;

// Leases `agent`, runs `text` greedily and keeps the whole context in its
// sequence (the last token fed, as a sending step does).
AgentLease RunSender(StoriesEnv& env, const std::string& agent, const std::string& text,
                     const HandoffConfig& outgoing) {
  absl::StatusOr<AgentLease> lease = env.pool->Acquire(agent, [] { return absl::OkStatus(); });
  EXPECT_TRUE(lease.ok()) << lease.status();
  agents::Sequence& seq = *(*lease)->sequence;
  seq.Reset();
  Handoff::PrepareSender(seq, &outgoing);
  absl::StatusOr<std::vector<int32_t>> ids = EncodeText(*(*lease)->model, text, true, "text");
  EXPECT_TRUE(ids.ok()) << ids.status();
  agents::GenerateOptions opts;
  opts.max_new_tokens = 12;
  opts.feed_final_token = true;
  absl::StatusOr<agents::GenerateResult> r = agents::Generate(seq, *ids, opts);
  EXPECT_TRUE(r.ok()) << r.status();
  return std::move(*lease);
}

std::string Continue(Agent& agent, const std::vector<int32_t>& prompt) {
  agents::GenerateOptions opts;
  opts.max_new_tokens = 12;
  absl::StatusOr<agents::GenerateResult> r = agents::Generate(*agent.sequence, prompt, opts);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->text : "";
}

std::vector<int32_t> Instruction(Agent& agent, const std::string& text) {
  return *EncodeText(*agent.model, text, /*add_special=*/false, "instruction");
}

constexpr char kText[] = "Once upon a time, there was a little girl named Lily.";

TEST(HandoffTest, FullCardInjectsTheExactContext) {
  auto env = StoriesEnv::Create(12);
  ASSERT_TRUE(env.ok()) << env.status();
  Handoff handoff((*env)->store.get(), &(*env)->stats, (*env)->config.limits);
  HandoffConfig full;
  full.mode = HandoffMode::kFull;
  AgentLease sender = RunSender(**env, "writer", kText, full);
  HandedContext sent = handoff.Send(*sender, full, nullptr, {0, 1}, "test");
  ASSERT_TRUE(sent.card) << sent.card_fallback_reason;
  EXPECT_EQ(sent.ids, sender->sequence->token_ids());
  EXPECT_EQ(sent.card->metadata().num_tokens, static_cast<int64_t>(sent.ids.size()));
  EXPECT_EQ((*env)->stats.Get(Stats::kCardsBuilt), 1);

  auto recv = (*env)->pool->Acquire("continuer", [] { return absl::OkStatus(); });
  ASSERT_TRUE(recv.ok());
  (*recv)->sequence->Reset();
  const std::vector<int32_t> inst = Instruction(**recv, " The next day,");
  absl::StatusOr<Received> in = handoff.Receive(**recv, sent, inst, "test");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_TRUE(in->injected);
  EXPECT_EQ(in->prompt, inst);
  EXPECT_EQ(in->stats.mode(), v1::HANDOFF_MODE_FULL);
  EXPECT_EQ(in->stats.card_id(), sent.card->id().ToHex());
  EXPECT_EQ(in->stats.context_tokens(), static_cast<int64_t>(sent.ids.size()));
  EXPECT_EQ((*recv)->sequence->token_ids(), sent.ids);
  EXPECT_EQ((*env)->stats.Get(Stats::kCardsInjected), 1);

  // A full card continues exactly as re-prefilling the same tokens (greedy).
  const std::string injected_out = Continue(**recv, in->prompt);
  auto other = (*env)->pool->Acquire("ender", [] { return absl::OkStatus(); });
  ASSERT_TRUE(other.ok());
  (*other)->sequence->Reset();
  std::vector<int32_t> re = sent.ids;
  re.insert(re.end(), inst.begin(), inst.end());
  EXPECT_EQ(injected_out, Continue(**other, re));
  EXPECT_FALSE(injected_out.empty());
}

TEST(HandoffTest, OneCardReceivedByManyAgents) {
  auto env = StoriesEnv::Create(12);
  ASSERT_TRUE(env.ok()) << env.status();
  Handoff handoff((*env)->store.get(), &(*env)->stats, (*env)->config.limits);
  HandoffConfig card;  // 4-bit adaptive
  AgentLease sender = RunSender(**env, "writer", kText, card);
  HandedContext sent = handoff.Send(*sender, card, nullptr, {0, 1}, "test");
  ASSERT_TRUE(sent.card) << sent.card_fallback_reason;
  sender.Release();
  EXPECT_NEAR(sent.card->metadata().avg_bits, 4.0, 0.6);
  for (const char* name : {"writer", "continuer", "ender"}) {
    auto lease = (*env)->pool->Acquire(name, [] { return absl::OkStatus(); });
    ASSERT_TRUE(lease.ok());
    (*lease)->sequence->Reset();
    absl::StatusOr<Received> in = handoff.Receive(**lease, sent, {}, "test");
    ASSERT_TRUE(in.ok()) << in.status();
    EXPECT_TRUE(in->injected) << name;
    EXPECT_EQ(in->stats.mode(), v1::HANDOFF_MODE_CARD);
  }
  EXPECT_EQ((*env)->stats.Get(Stats::kCardsBuilt), 1);
  EXPECT_EQ((*env)->stats.Get(Stats::kCardsInjected), 3);
}

TEST(HandoffTest, CardOfAnInjectedContextIsIncremental) {
  auto env = StoriesEnv::Create(12);
  ASSERT_TRUE(env.ok()) << env.status();
  Handoff handoff((*env)->store.get(), &(*env)->stats, (*env)->config.limits);
  HandoffConfig card;
  card.policy = BitPolicy::kUniform;
  AgentLease sender = RunSender(**env, "writer", kText, card);
  HandedContext first = handoff.Send(*sender, card, nullptr, {0, 2}, "test");
  ASSERT_TRUE(first.card) << first.card_fallback_reason;

  auto recv = (*env)->pool->Acquire("continuer", [] { return absl::OkStatus(); });
  ASSERT_TRUE(recv.ok());
  agents::Sequence& seq = *(*recv)->sequence;
  seq.Reset();
  Handoff::PrepareSender(seq, &card);
  absl::StatusOr<Received> in = handoff.Receive(**recv, first, Instruction(**recv, " Then"), "t");
  ASSERT_TRUE(in.ok() && in->injected);
  agents::GenerateOptions opts;
  opts.max_new_tokens = 8;
  opts.feed_final_token = true;
  ASSERT_TRUE(agents::Generate(seq, in->prompt, opts).ok());
  HandedContext second = handoff.Send(**recv, card, first.card.get(), {1, 2}, "test");
  ASSERT_TRUE(second.card) << second.card_fallback_reason;
  EXPECT_EQ(second.card->metadata().parent_id, first.card->id());
  EXPECT_EQ(second.card->metadata().num_tokens,
            static_cast<int64_t>(second.ids.size() - first.ids.size()));
  EXPECT_EQ(second.card->metadata().total_tokens(), static_cast<int64_t>(second.ids.size()));
}

TEST(HandoffTest, CardOverTheSizeLimitFallsBackToReprefill) {
  auto env = StoriesEnv::Create(12, "limits: {max_card_bytes: 1024}\n");
  ASSERT_TRUE(env.ok()) << env.status();
  Handoff handoff((*env)->store.get(), &(*env)->stats, (*env)->config.limits);
  HandoffConfig card;
  AgentLease sender = RunSender(**env, "writer", kText, card);
  HandedContext sent = handoff.Send(*sender, card, nullptr, {0, 1}, "test");
  EXPECT_FALSE(sent.card);
  EXPECT_THAT(sent.card_fallback_reason, HasSubstr("over limits.max_card_bytes = 1024"));
  EXPECT_EQ((*env)->stats.Get(Stats::kCardsBuilt), 0);

  auto recv = (*env)->pool->Acquire("continuer", [] { return absl::OkStatus(); });
  ASSERT_TRUE(recv.ok());
  (*recv)->sequence->Reset();
  const std::vector<int32_t> inst = Instruction(**recv, " Then");
  absl::StatusOr<Received> in = handoff.Receive(**recv, sent, inst, "test");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_FALSE(in->injected);
  EXPECT_EQ(in->stats.mode(), v1::HANDOFF_MODE_REPREFILL);
  EXPECT_EQ(in->stats.requested_mode(), v1::HANDOFF_MODE_CARD);
  EXPECT_EQ(in->stats.fallback_reason(), sent.card_fallback_reason);
  std::vector<int32_t> want = sent.ids;
  want.insert(want.end(), inst.begin(), inst.end());
  EXPECT_EQ(in->prompt, want);
  EXPECT_EQ(in->stats.reprefill_tokens(), static_cast<int64_t>(sent.ids.size()));
  EXPECT_EQ((*env)->stats.Get(Stats::kReprefillFallbacks), 1);
}

TEST(HandoffTest, ReprefillModeBuildsNoCard) {
  auto env = StoriesEnv::Create(12);
  ASSERT_TRUE(env.ok()) << env.status();
  Handoff handoff((*env)->store.get(), &(*env)->stats, (*env)->config.limits);
  HandoffConfig re;
  re.mode = HandoffMode::kReprefill;
  AgentLease sender = RunSender(**env, "writer", kText, re);
  HandedContext sent = handoff.Send(*sender, re, nullptr, {0, 1}, "test");
  EXPECT_FALSE(sent.card);
  EXPECT_TRUE(sent.card_fallback_reason.empty());
  EXPECT_FALSE(sent.text.empty());
  sender.Release();
  auto recv = (*env)->pool->Acquire("writer", [] { return absl::OkStatus(); });
  ASSERT_TRUE(recv.ok());
  (*recv)->sequence->Reset();
  absl::StatusOr<Received> in = handoff.Receive(**recv, sent, {}, "test");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->prompt, sent.ids);
  EXPECT_TRUE(in->stats.fallback_reason().empty());
  EXPECT_EQ((*env)->stats.Get(Stats::kReprefillFallbacks), 0);
}

// Prefix: the first call prefills the system tokens and keeps them as a
// pinned full card; later calls (any agent of the model) inject it, and the
// continuation is identical to the prefilled one.
TEST(HandoffTest, PrefixCardIsBuiltOnceThenInjected) {
  auto env = StoriesEnv::Create(12);
  ASSERT_TRUE(env.ok()) << env.status();
  Handoff handoff((*env)->store.get(), &(*env)->stats, (*env)->config.limits);
  auto writer = (*env)->pool->Acquire("writer", [] { return absl::OkStatus(); });
  ASSERT_TRUE(writer.ok());
  const std::vector<int32_t> system = *EncodeText(*(*writer)->model, kText, true, "system");
  const std::vector<int32_t> inst = Instruction(**writer, " The next day,");
  (*writer)->sequence->Reset();
  absl::StatusOr<Prefixed> first = handoff.Prefix(**writer, system, "test");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->injected);
  ASSERT_TRUE(first->card);
  EXPECT_EQ(first->tokens, static_cast<int64_t>(system.size()));
  EXPECT_EQ(first->card->metadata().token_ids, system);
  EXPECT_EQ((*writer)->sequence->token_ids(), system);
  const std::string prefilled_out = Continue(**writer, inst);
  EXPECT_TRUE(handoff.IsPrefixCard(first->card->id().ToHex()));
  EXPECT_EQ(handoff.PrefixOf("writer").card_id, first->card->id().ToHex());
  EXPECT_EQ(handoff.PrefixOf("writer").tokens, static_cast<int64_t>(system.size()));
  EXPECT_TRUE(handoff.PrefixOf("ender").card_id.empty());
  bool pinned = false;
  for (const auto& row : (*env)->store->List()) {
    if (row.id == first->card->id()) pinned = row.pinned_until == absl::InfiniteFuture();
  }
  EXPECT_TRUE(pinned);

  auto ender = (*env)->pool->Acquire("ender", [] { return absl::OkStatus(); });
  ASSERT_TRUE(ender.ok());
  (*ender)->sequence->Reset();
  absl::StatusOr<Prefixed> second = handoff.Prefix(**ender, system, "test");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->injected);
  EXPECT_EQ(second->card->id(), first->card->id());
  EXPECT_EQ((*ender)->sequence->token_ids(), system);
  EXPECT_EQ(Continue(**ender, inst), prefilled_out);
  EXPECT_EQ((*env)->stats.Get(Stats::kCardsBuilt), 1);
  EXPECT_EQ((*env)->stats.Get(Stats::kCardsInjected), 1);
}

}  // namespace
}  // namespace qkvshare::daemon

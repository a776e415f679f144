// End-to-end tests of cards that outlive a task (issue 16) on a real daemon
// with the bundled stories260K model: sessions (keep_context +
// context_card), export -> restart -> import -> continue, content-derived
// ids across daemon lifetimes, forged cards.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cachecard/metadata_codec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/daemon_fixture.h"

namespace qkvshare {
namespace {

using ::qkvshare::testing::DaemonProcess;
using ::testing::HasSubstr;

constexpr char kInput[] = "Once upon a time, there was a little girl named Lily.";

// The three turns of the story workflow (tests/daemon_fixture.h), as
// one-hop tasks: (agent, instruction).
const std::pair<const char*, const char*> kTurns[3] = {
    {"writer", "{input}"}, {"continuer", "The next day,"}, {"ender", "In the end,"}};

v1::SubmitTaskRequest Turn(int k, const std::string& from_card, bool keep) {
  v1::SubmitTaskRequest r;
  v1::HopSpec* hop = r.mutable_inline_()->add_hops();
  hop->set_agent(kTurns[k].first);
  hop->set_instruction(kTurns[k].second);
  r.set_input(kInput);
  r.mutable_handoff_override()->set_mode(v1::HANDOFF_MODE_FULL);
  r.set_context_card(from_card);
  r.set_keep_context(keep);
  return r;
}

std::unique_ptr<DaemonProcess> StartDaemon() {
  auto d = DaemonProcess::Start(
      DaemonProcess::StoriesConfig(24, "card_store: {kept_ttl_seconds: 600}\n"),
      {{"full.yaml", DaemonProcess::StoryWorkflow("story_full", "{mode: full}")},
       {"reprefill.yaml", DaemonProcess::StoryWorkflow("story_reprefill", "{mode: reprefill}")}});
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *std::move(d) : nullptr;
}

v1::Task RunOk(DaemonProcess& d, const v1::SubmitTaskRequest& r) {
  absl::StatusOr<v1::Task> t = d.RunTask(r);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return v1::Task();
  EXPECT_EQ(t->state(), v1::TASK_STATE_FINISHED) << t->reason();
  return *t;
}

std::vector<v1::CardInfo> Cards(DaemonProcess& d) {
  grpc::ClientContext ctx;
  v1::ListCardsResponse resp;
  EXPECT_TRUE(d.cards().ListCards(&ctx, v1::ListCardsRequest(), &resp).ok());
  return {resp.cards().begin(), resp.cards().end()};
}

int CopiesOf(DaemonProcess& d, const std::string& id) {
  int n = 0;
  for (const v1::CardInfo& c : Cards(d)) n += c.id() == id;
  return n;
}

std::string Export(DaemonProcess& d, const std::string& id) {
  grpc::ClientContext ctx;
  v1::ExportCardRequest req;
  req.set_id(id);
  auto reader = d.cards().ExportCard(&ctx, req);
  std::string bytes;
  v1::CardChunk chunk;
  while (reader->Read(&chunk)) bytes += chunk.data();
  grpc::Status s = reader->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  return bytes;
}

grpc::Status Import(DaemonProcess& d, const std::string& bytes, v1::CardInfo* info) {
  grpc::ClientContext ctx;
  auto writer = d.cards().ImportCard(&ctx, info);
  v1::CardChunk chunk;
  chunk.set_data(bytes);
  writer->Write(chunk);
  writer->WritesDone();
  return writer->Finish();
}

grpc::StatusCode SubmitCode(DaemonProcess& d, const v1::SubmitTaskRequest& r, std::string* msg) {
  grpc::ClientContext ctx;
  v1::SubmitTaskResponse resp;
  grpc::Status s = d.tasks().SubmitTask(&ctx, r, &resp);
  *msg = s.error_message();
  return s.error_code();
}

// A conversation of three tasks chained by kept full cards continues exactly
// where the previous task stopped: the same greedy outputs as the one task
// that runs the three turns with full handoffs, and as the one that
// re-prefills the whole text at every turn. Each kept card extends the
// previous one (no token is stored twice), and the first kept card is the
// same card (same content-derived id, one copy) as the 3-hop task's first
// handoff card.
TEST(SessionE2eTest, ThreeTaskSessionEqualsOneGo) {
  std::unique_ptr<DaemonProcess> d = StartDaemon();
  ASSERT_NE(d, nullptr);
  const v1::Task one_go = RunOk(*d, [] {
    v1::SubmitTaskRequest r;
    r.set_workflow("story_full");
    r.set_input(kInput);
    return r;
  }());
  const v1::Task reprefill = RunOk(*d, [] {
    v1::SubmitTaskRequest r;
    r.set_workflow("story_reprefill");
    r.set_input(kInput);
    return r;
  }());
  ASSERT_EQ(one_go.hops_size(), 3);
  ASSERT_EQ(reprefill.hops_size(), 3);

  std::string card;
  std::vector<v1::Task> turns;
  for (int k = 0; k < 3; ++k) {
    turns.push_back(RunOk(*d, Turn(k, card, /*keep=*/true)));
    const v1::Task& t = turns.back();
    ASSERT_EQ(t.hops_size(), 1);
    EXPECT_EQ(t.output(), one_go.hops(k).output()) << "turn " << k;
    EXPECT_EQ(t.output(), reprefill.hops(k).output()) << "turn " << k;
    EXPECT_EQ(t.context_card(), card);
    ASSERT_EQ(t.kept_card().size(), 32u) << t.DebugString();
    EXPECT_EQ(t.hops(0).kept_card(), t.kept_card());
    if (k > 0) {
      // Continued from the card: only the instruction was prefilled.
      const v1::HandoffStats& in = t.hops(0).handoff_in();
      EXPECT_EQ(in.mode(), v1::HANDOFF_MODE_FULL);
      EXPECT_TRUE(in.fallback_reason().empty()) << in.fallback_reason();
      EXPECT_EQ(in.card_id(), card);
      EXPECT_EQ(in.reprefill_tokens(), 0);
      EXPECT_LT(t.hops(0).prefill_tokens(), in.context_tokens());
    }
    card = t.kept_card();
  }
  // The chain of kept cards: each incremental on the previous.
  const std::vector<v1::CardInfo> cards = Cards(*d);
  auto find = [&](const std::string& id) {
    for (const v1::CardInfo& c : cards) {
      if (c.id() == id) return c;
    }
    return v1::CardInfo();
  };
  EXPECT_TRUE(find(turns[0].kept_card()).parent_id().empty());
  EXPECT_EQ(find(turns[1].kept_card()).parent_id(), turns[0].kept_card());
  EXPECT_EQ(find(turns[2].kept_card()).parent_id(), turns[1].kept_card());
  // Turn 1's kept card holds hop 0's context of the one-go task: the same card.
  EXPECT_EQ(turns[0].kept_card(), one_go.hops(1).handoff_in().card_id());
  EXPECT_EQ(CopiesOf(*d, turns[0].kept_card()), 1);
  EXPECT_EQ(d->SignalAndWait(SIGTERM), 0) << d->Log();
}

// A card exported from one daemon, imported into a new one, starts a task
// that continues with the same greedy tokens as in the first daemon; the
// same task in the second lifetime keeps the same card id, stored once. A
// card whose id does not match its content is refused with the reason, and
// a card of another model is INVALID_ARGUMENT at submit.
TEST(SessionE2eTest, ExportRestartImportContinue) {
  std::string kept, bytes, continued;
  {
    std::unique_ptr<DaemonProcess> a = StartDaemon();
    ASSERT_NE(a, nullptr);
    kept = RunOk(*a, Turn(0, "", /*keep=*/true)).kept_card();
    ASSERT_FALSE(kept.empty());
    continued = RunOk(*a, Turn(1, kept, /*keep=*/false)).output();
    ASSERT_FALSE(continued.empty());
    bytes = Export(*a, kept);
    EXPECT_EQ(a->SignalAndWait(SIGTERM), 0) << a->Log();
  }
  std::unique_ptr<DaemonProcess> b = StartDaemon();
  ASSERT_NE(b, nullptr);
  std::string msg;
  EXPECT_EQ(SubmitCode(*b, Turn(1, kept, false), &msg), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(msg, HasSubstr("card " + kept + " is not stored"));

  // A forged card: another id, a valid header checksum.
  std::string forged = bytes;
  forged[64] ^= 0x5a;
  uint64_t metadata_bytes = 0;  // CardHeader offset 16
  std::memcpy(&metadata_bytes, forged.data() + 16, sizeof metadata_bytes);
  ASSERT_LE(metadata_bytes, forged.size());
  cachecard::SealHeaderChecksum(
      absl::MakeSpan(reinterpret_cast<uint8_t*>(forged.data()), metadata_bytes));
  v1::CardInfo info;
  grpc::Status s = Import(*b, forged, &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(),
              HasSubstr("does not match its content (the content hashes to " + kept + ")"));
  EXPECT_TRUE(Cards(*b).empty());

  s = Import(*b, bytes, &info);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(info.id(), kept);
  const v1::Task resumed = RunOk(*b, Turn(1, kept, /*keep=*/false));
  EXPECT_EQ(resumed.output(), continued);
  EXPECT_EQ(resumed.hops(0).handoff_in().reprefill_tokens(), 0);
  // The same first turn in this lifetime: the same id, one stored copy
  // (importing it again is fine too).
  EXPECT_EQ(RunOk(*b, Turn(0, "", /*keep=*/true)).kept_card(), kept);
  s = Import(*b, bytes, &info);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(CopiesOf(*b, kept), 1);
  EXPECT_EQ(Cards(*b).size(), 1u);

  // Bad ids at submit.
  EXPECT_EQ(SubmitCode(*b, Turn(1, "xyz", false), &msg), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(msg, HasSubstr("context_card: card id 'xyz': expected 32 hex digits"));
  EXPECT_EQ(b->SignalAndWait(SIGTERM), 0) << b->Log();
}

// Prefix cards: the first task on an agent with a system text prefills it
// and keeps it as a pinned full card; the second task's first hop injects it,
// so its prefill count drops by exactly the system text's tokens, and its
// greedy output is identical. The card is listed as the agent's prefix card
// and as a pinned card; a two-hop task's handoff card is incremental on it.
TEST(SessionE2eTest, PrefixCardReplacesSystemPrefill) {
  auto started = DaemonProcess::Start(
      DaemonProcess::StoriesConfig(
          24,
          "  narrator: {model: stories, system: \"Once upon a time, in a small town, there "
          "lived a kind old man who loved to tell stories to the children. \", generation: "
          "{max_new_tokens: 24}}\n"),
      {});
  ASSERT_TRUE(started.ok()) << started.status();
  DaemonProcess& d = **started;
  auto task = [](bool two_hops) {
    v1::SubmitTaskRequest r;
    v1::HopSpec* hop = r.mutable_inline_()->add_hops();
    hop->set_agent("narrator");
    hop->set_instruction("{input}");
    if (two_hops) {
      hop = r.mutable_inline_()->add_hops();
      hop->set_agent("continuer");
      hop->set_instruction("The next day,");
    }
    r.set_input("One day, a girl named Lily");
    r.mutable_handoff_override()->set_mode(v1::HANDOFF_MODE_FULL);
    return r;
  };
  const v1::Task first = RunOk(d, task(false));
  const v1::Task second = RunOk(d, task(false));
  ASSERT_EQ(first.hops_size(), 1);
  ASSERT_EQ(second.hops_size(), 1);
  const v1::HopResult& a = first.hops(0);
  const v1::HopResult& b = second.hops(0);
  ASSERT_EQ(a.prefix_card().size(), 32u) << a.DebugString();
  EXPECT_EQ(a.prefix_tokens(), 0);  // prefilled, then kept
  EXPECT_EQ(b.prefix_card(), a.prefix_card());
  const std::vector<v1::CardInfo> cards = Cards(d);
  ASSERT_EQ(cards.size(), 1u);
  const v1::CardInfo& prefix = cards[0];
  EXPECT_EQ(prefix.id(), a.prefix_card());
  EXPECT_EQ(prefix.pin(), "prefix");
  EXPECT_EQ(prefix.mode(), "full");
  EXPECT_EQ(prefix.source_agent(), "narrator");
  EXPECT_GT(prefix.context_tokens(), 20);  // BOS + the system text
  EXPECT_EQ(b.prefix_tokens(), prefix.context_tokens());
  EXPECT_GT(b.prefix_inject_ms(), 0);
  EXPECT_EQ(b.prefill_tokens(), a.prefill_tokens() - prefix.context_tokens());
  EXPECT_GT(b.prefill_tokens(), 0);
  EXPECT_FALSE(a.output().empty());
  EXPECT_EQ(b.output(), a.output());
  {
    grpc::ClientContext ctx;
    v1::ListAgentsResponse agents;
    ASSERT_TRUE(d.catalog().ListAgents(&ctx, v1::ListAgentsRequest(), &agents).ok());
    int seen = 0;
    for (const v1::AgentInfo& ag : agents.agents()) {
      if (ag.name() == "narrator") {
        ++seen;
        EXPECT_EQ(ag.prefix_card(), prefix.id());
        EXPECT_EQ(ag.prefix_tokens(), prefix.context_tokens());
      } else {
        EXPECT_TRUE(ag.prefix_card().empty()) << ag.name();  // no system text
      }
    }
    EXPECT_EQ(seen, 1);
  }
  // A handoff card of a context that started from the prefix card extends it.
  const v1::Task two = RunOk(d, task(true));
  ASSERT_EQ(two.hops_size(), 2);
  EXPECT_EQ(two.hops(0).output(), a.output());
  EXPECT_EQ(two.hops(0).prefix_tokens(), prefix.context_tokens());
  const std::string handed = two.hops(1).handoff_in().card_id();
  ASSERT_FALSE(handed.empty()) << two.hops(1).DebugString();
  for (const v1::CardInfo& c : Cards(d)) {
    if (c.id() == handed) EXPECT_EQ(c.parent_id(), prefix.id());
  }
  EXPECT_EQ(d.SignalAndWait(SIGTERM), 0) << d.Log();
}

}  // namespace
}  // namespace qkvshare

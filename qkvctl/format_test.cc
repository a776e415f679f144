#include "qkvctl/format.h"

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace qkvshare::qkvctl {
namespace {

TEST(FormatTest, EnumNames) {
  EXPECT_EQ(TaskStateName(v1::TASK_STATE_FINISHED), "finished");
  EXPECT_EQ(TaskStateName(v1::TASK_STATE_UNSPECIFIED), "-");
  EXPECT_EQ(HandoffModeName(v1::HANDOFF_MODE_REPREFILL), "reprefill");
  EXPECT_EQ(BitPolicyName(v1::BIT_POLICY_UNIFORM), "uniform");
}

TEST(FormatTest, MessageJsonPrettyAndCompact) {
  v1::SubmitTaskResponse r;
  r.set_task_id("t-1");
  EXPECT_EQ(MessageJson(r, /*pretty=*/false), "{\"task_id\":\"t-1\"}\n");
  v1::Status s;  // every field printed, even defaults
  nlohmann::json j = nlohmann::json::parse(MessageJson(s));
  EXPECT_EQ(j["agents"], 0);
  EXPECT_EQ(j["store_bytes"], "0");
  EXPECT_EQ(j["version"], "");
}

TEST(FormatTest, TasksShowAgeAndRunTime) {
  v1::ListTasksResponse tasks;
  v1::Task* running = tasks.add_tasks();
  running->set_id("t-2");
  running->set_state(v1::TASK_STATE_RUNNING);
  running->set_num_hops(3);
  running->set_created_unix_ms(10'000);
  running->set_started_unix_ms(11'000);
  running->add_hops();
  v1::Task* failed = tasks.add_tasks();
  failed->set_id("t-1");
  failed->set_workflow("story");
  failed->set_state(v1::TASK_STATE_FAILED);
  failed->set_reason("deadline exceeded");
  failed->set_num_hops(2);
  failed->set_created_unix_ms(1'000);
  failed->set_started_unix_ms(1'000);
  failed->set_ended_unix_ms(1'850);
  EXPECT_EQ(FormatTasks(tasks, /*now_unix_ms=*/13'500),
            "ID   STATE    WORKFLOW  LABEL  HOPS     CREATED    TIME  REASON\n"
            "t-2  running  -                 1/3   3.5 s ago   2.5 s\n"
            "t-1  failed   story             0/2  12.5 s ago  850 ms  deadline exceeded\n");
}

TEST(FormatTest, HopTableDashesForTheFirstHopAndReprefill) {
  std::vector<v1::HopResult> hops(2);
  hops[0].set_index(0);
  hops[0].set_agent("a");
  hops[0].set_ttft_ms(3.25);
  hops[0].set_generated_tokens(5);
  hops[0].set_decode_tokens_per_s(100);
  hops[0].set_stop(v1::STOP_REASON_STOP_TOKEN);
  hops[0].set_stop_reason("stop_token");
  hops[1].set_index(1);
  hops[1].set_agent("b");
  hops[1].mutable_handoff_in()->set_mode(v1::HANDOFF_MODE_REPREFILL);
  hops[1].mutable_handoff_in()->set_requested_mode(v1::HANDOFF_MODE_REPREFILL);
  hops[1].set_ttft_ms(12);
  EXPECT_EQ(
      FormatHopTable(hops),
      "HOP  AGENT  HANDOFF    CARD BYTES  AVG BITS  INJECT MS  TTFT MS  TOKENS  TOK/S  STOP\n"
      "  1  a      -                   -         -          -      3.2       5  100.0  stop_token\n"
      "  2  b      reprefill           -         -          -     12.0       0    0.0\n");
}

TEST(FormatTest, HopTableNotesARaisedCardBudget) {
  std::vector<v1::HopResult> hops(1);
  hops[0].set_index(1);
  hops[0].set_agent("b");
  v1::HandoffStats* in = hops[0].mutable_handoff_in();
  in->set_mode(v1::HANDOFF_MODE_CARD);
  in->set_requested_mode(v1::HANDOFF_MODE_CARD);
  in->set_avg_bits(4);
  in->set_budget_reason("bits 2 raised to 4 (models.m.min_card_bits)");
  const std::string out = FormatHopTable(hops);
  EXPECT_NE(out.find("\n  hop 2: card bits 2 raised to 4 (models.m.min_card_bits)\n"),
            std::string::npos)
      << out;
}

// The `stop` enum names the reason; a daemon without it sends only the text.
TEST(FormatTest, StopReasonFromTheEnumElseTheText) {
  v1::HopResult h;
  EXPECT_EQ(StopReasonName(h), "");
  h.set_stop_reason("max_new_tokens");  // an older daemon
  EXPECT_EQ(StopReasonName(h), "max_new_tokens");
  h.set_stop(v1::STOP_REASON_CONTEXT_FULL);
  EXPECT_EQ(StopReasonName(h), "context_full");
  h.set_stop(v1::STOP_REASON_STOP_STRING);
  EXPECT_EQ(StopReasonName(h), "stop_string");
}

TEST(FormatTest, ForeignCardsAreMarked) {
  v1::ListCardsResponse cards;
  v1::CardInfo* mine = cards.add_cards();
  mine->set_id("c1");
  v1::CardInfo* other = cards.add_cards();
  other->set_id("c2");
  other->set_foreign_model(true);
  other->set_fingerprint("ab12");
  std::string out = FormatCards(cards);
  EXPECT_NE(out.find("\nc1  "), std::string::npos) << out;
  EXPECT_NE(out.find("\nc2* "), std::string::npos) << out;
  EXPECT_NE(out.find("* for a model no agent here runs (foreign fingerprint)\n"), std::string::npos)
      << out;
  EXPECT_NE(FormatCard(*other).find("ab12 (foreign: no hosted model matches)"), std::string::npos);
  cards.mutable_cards()->RemoveLast();
  EXPECT_EQ(FormatCards(cards).find("foreign"), std::string::npos);
}

TEST(FormatTest, PinsAndPrefixCardsAreShown) {
  v1::ListCardsResponse cards;
  v1::CardInfo* prefix = cards.add_cards();
  prefix->set_id("p1");
  prefix->set_pin("prefix");
  v1::CardInfo* kept = cards.add_cards();
  kept->set_id("k1");
  kept->set_pin("kept");
  kept->set_pinned_until_unix_ms(1700000000000);
  const std::string out = FormatCards(cards);
  EXPECT_NE(out.find(" PIN "), std::string::npos) << out;
  EXPECT_NE(out.find(" prefix "), std::string::npos) << out;
  EXPECT_NE(out.find(" kept "), std::string::npos) << out;
  EXPECT_NE(FormatCard(*kept).find("kept (until unix ms 1700000000000)"), std::string::npos)
      << FormatCard(*kept);
  EXPECT_NE(FormatCard(*prefix).find("prefix\n"), std::string::npos) << FormatCard(*prefix);

  v1::ListAgentsResponse agents;
  v1::AgentInfo* a = agents.add_agents();
  a->set_name("narrator");
  a->set_prefix_card("0123456789abcdef0123456789abcdef");
  a->set_prefix_tokens(42);
  agents.add_agents()->set_name("plain");
  const std::string listed = FormatAgents(agents);
  EXPECT_NE(listed.find("PREFIX CARD"), std::string::npos) << listed;
  EXPECT_NE(listed.find("(42 tok)"), std::string::npos) << listed;
}

TEST(FormatTest, CardHistogramSkipsEmptyWidths) {
  v1::CardInfo c;
  c.set_id("c");
  for (int b = 0; b <= 16; ++b) {
    c.add_k_bits_histogram(b == 16 ? 7 : 0);
    c.add_v_bits_histogram(b == 3 ? 7 : 0);
  }
  std::string out = FormatCard(c);
  EXPECT_NE(out.find("BITS  K TOKENS  V TOKENS\n"
                     "   3         0         7\n"
                     "  16         7         0\n"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("LAYER"), std::string::npos);  // no per-layer sizes given
}

}  // namespace
}  // namespace qkvshare::qkvctl

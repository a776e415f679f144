// End-to-end tests of graph workflows on the bundled stories260K model: a
// real qkvshared process, one test per pattern (loop, route, fan-out + join,
// pause/resume), asserting the path taken (steps and visits in order), the
// route reasons, card counts and the pause's resource use.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/daemon_fixture.h"

namespace qkvshare {
namespace {

using ::qkvshare::testing::DaemonProcess;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kInput[] = "Once upon a time, there was a little girl named Lily.";

// A loop whose critic never approves ("zqzqzq" is not a word stories260K
// writes): writer and critic alternate until their bound.
std::string LoopWorkflow(const std::string& name, const std::string& contains,
                         const std::string& on_limit) {
  return absl::StrCat("name: ", name, R"(
handoff: {mode: card, bits: 4}
steps:
  writer:
    agent: writer
    instruction: "{input}"
    max_visits: 2
)",
                      on_limit.empty() ? "" : absl::StrCat("    on_limit: ", on_limit, "\n"), R"(
    next: critic
  critic:
    agent: continuer
    instruction: " The critic said:"
    max_visits: 2
    routes:
      - {contains: ")",
                      contains, R"(", to: finish}
    default: writer
  finish:
    agent: ender
    instruction: " In the end,"
)");
}

constexpr char kExperts[] = R"(name: experts
handoff: {mode: card, bits: 4}
steps:
  writer: {agent: writer, instruction: "{input}", next: fan}
  fan:
    parallel:
      morning: {agent: writer, instruction: " In the morning,"}
      noon: {agent: continuer, instruction: " At noon,"}
      night: {agent: ender, instruction: " At night,"}
    join: summary
  summary: {agent: ender, instruction: " {branch.night} In the end,"}
)";

constexpr char kApprove[] = R"(name: approve
handoff: {mode: full}
steps:
  writer: {agent: writer, instruction: "{input}", next: approval}
  approval:
    await_input: "Continue?"
    routes:
      - {equals: "no", to: end}
    default: finish
  finish: {agent: ender, instruction: " {input}"}
)";

v1::SubmitTaskRequest Submit(const std::string& workflow) {
  v1::SubmitTaskRequest r;
  r.set_workflow(workflow);
  r.set_input(kInput);
  return r;
}

// "step:visit" (with "/branch") per step run, in order.
std::vector<std::string> Path(const v1::Task& t) {
  std::vector<std::string> out;
  for (const v1::HopResult& h : t.hops()) {
    out.push_back(
        absl::StrCat(h.step(), ":", h.visit(), h.branch().empty() ? "" : "/", h.branch()));
  }
  return out;
}

std::vector<v1::TaskEvent> Events(DaemonProcess& d, const std::string& id) {
  grpc::ClientContext ctx;
  v1::WatchTaskRequest w;
  w.set_task_id(id);
  w.set_skip_tokens(true);
  auto reader = d.tasks().WatchTask(&ctx, w);
  std::vector<v1::TaskEvent> out;
  v1::TaskEvent ev;
  while (reader->Read(&ev)) out.push_back(ev);
  EXPECT_TRUE(reader->Finish().ok());
  return out;
}

std::string SubmitId(DaemonProcess& d, const v1::SubmitTaskRequest& r) {
  grpc::ClientContext ctx;
  v1::SubmitTaskResponse resp;
  grpc::Status s = d.tasks().SubmitTask(&ctx, r, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return resp.task_id();
}

v1::Task Get(DaemonProcess& d, const std::string& id) {
  grpc::ClientContext ctx;
  v1::GetTaskRequest g;
  g.set_task_id(id);
  v1::Task t;
  EXPECT_TRUE(d.tasks().GetTask(&ctx, g, &t).ok());
  return t;
}

v1::Task WaitForState(DaemonProcess& d, const std::string& id, v1::TaskState state) {
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  v1::Task t = Get(d, id);
  while (t.state() != state && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
    t = Get(d, id);
  }
  return t;
}

grpc::Status Resume(DaemonProcess& d, const std::string& id, const std::string& input,
                    v1::Task* out = nullptr) {
  grpc::ClientContext ctx;
  v1::ResumeTaskRequest r;
  r.set_task_id(id);
  r.set_input(input);
  v1::Task t;
  grpc::Status s = d.tasks().ResumeTask(&ctx, r, &t);
  if (out != nullptr) *out = t;
  return s;
}

class GraphDaemonTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto d = DaemonProcess::Start(
        DaemonProcess::StoriesConfig(
            16,
            "limits: {max_concurrent_tasks: 2, max_paused_tasks: 1, paused_ttl_seconds: 600}\n"),
        {{"loop.yaml", LoopWorkflow("loop", "zqzqzq", "finish")},
         {"loop_fail.yaml", LoopWorkflow("loop_fail", "zqzqzq", "")},
         {"experts.yaml", kExperts},
         {"approve.yaml", kApprove}});
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = d->release();
  }
  static void TearDownTestSuite() {
    if (daemon_ != nullptr) EXPECT_EQ(daemon_->SignalAndWait(SIGTERM), 0) << daemon_->Log();
    delete daemon_;
    daemon_ = nullptr;
  }
  static DaemonProcess* daemon_;
};
DaemonProcess* GraphDaemonTest::daemon_ = nullptr;

TEST_F(GraphDaemonTest, LoopStopsAtItsBoundAndTakesOnLimit) {
  auto t = daemon_->RunTask(Submit("loop"));
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->state(), v1::TASK_STATE_FINISHED) << t->reason();
  EXPECT_THAT(Path(*t), ElementsAre("writer:1", "critic:1", "writer:2", "critic:2", "finish:1"));
  EXPECT_EQ(t->hops(1).route(), "writer");
  EXPECT_EQ(t->hops(1).route_reason(), "default (no route matched)");
  EXPECT_EQ(t->hops(3).route(), "finish");
  EXPECT_EQ(t->hops(3).route_reason(),
            "default (no route matched); step writer is at max_visits 2: on_limit -> finish");
  EXPECT_EQ(t->hops(4).route(), "end");
  EXPECT_EQ(t->output(), t->hops(4).output());
  // Every later step continued from an injected card; the loop's cards chain.
  for (int k = 1; k < 5; ++k) {
    EXPECT_EQ(t->hops(k).handoff_in().mode(), v1::HANDOFF_MODE_CARD) << k;
    EXPECT_TRUE(t->hops(k).handoff_in().fallback_reason().empty()) << k;
  }
  EXPECT_GT(t->hops(4).handoff_in().chain_bytes(), t->hops(4).handoff_in().card_bytes());
}

TEST_F(GraphDaemonTest, LoopWithoutOnLimitFailsWithTheBound) {
  auto t = daemon_->RunTask(Submit("loop_fail"));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->state(), v1::TASK_STATE_FAILED);
  EXPECT_THAT(t->reason(), HasSubstr("step critic, visit 2/2: step writer reached max_visits 2 "
                                     "(no on_limit)"));
  EXPECT_THAT(Path(*t), ElementsAre("writer:1", "critic:1", "writer:2"));
}

// A route on a word the critic actually wrote: taken at once.
TEST_F(GraphDaemonTest, RouteMatchesTheOutput) {
  auto first = daemon_->RunTask(Submit("loop"));
  ASSERT_TRUE(first.ok() && first->hops_size() > 1);
  const std::string critic = first->hops(1).output();
  std::string word;
  for (size_t i = 0; i < critic.size() && word.size() < 3; ++i) {
    if (std::isalpha(static_cast<unsigned char>(critic[i]))) {
      word += critic[i];
    } else if (word.size() < 3) {
      word.clear();
    }
  }
  ASSERT_GE(word.size(), 3u) << critic;
  std::ofstream(daemon_->workflows_dir() + "/match.yaml") << LoopWorkflow("match", word, "");
  grpc::ClientContext ctx;
  v1::ReloadWorkflowsResponse resp;
  ASSERT_TRUE(daemon_->catalog().ReloadWorkflows(&ctx, {}, &resp).ok());
  auto t = daemon_->RunTask(Submit("match"));
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->state(), v1::TASK_STATE_FINISHED) << t->reason();
  EXPECT_THAT(Path(*t), ElementsAre("writer:1", "critic:1", "finish:1"));
  EXPECT_EQ(t->hops(1).output(), critic);
  EXPECT_EQ(t->hops(1).route_reason(), absl::StrCat("routes[0]: output contains '", word, "'"));
  std::filesystem::remove(daemon_->workflows_dir() + "/match.yaml");
}

TEST_F(GraphDaemonTest, FanOutBuildsOneCardAndInjectsItIntoEveryBranch) {
  const std::string id = SubmitId(*daemon_, Submit("experts"));
  const std::vector<v1::TaskEvent> events = Events(*daemon_, id);
  const v1::Task t = Get(*daemon_, id);
  ASSERT_EQ(t.state(), v1::TASK_STATE_FINISHED) << t.reason();
  EXPECT_THAT(Path(t),
              ElementsAre("writer:1", "fan:1/morning", "fan:1/noon", "fan:1/night", "summary:1"));
  int built = 0;
  std::string card;
  std::map<std::string, std::string> injected;  // branch (or step) -> card id
  for (const v1::TaskEvent& e : events) {
    if (e.has_card_built()) {
      ++built;
      card = e.card_built().card_id();
    }
    if (e.has_handoff()) {
      EXPECT_EQ(e.handoff().stats().mode(), v1::HANDOFF_MODE_CARD);
      injected[e.handoff().branch().empty() ? e.handoff().step() : e.handoff().branch()] =
          e.handoff().stats().card_id();
    }
  }
  EXPECT_EQ(built, 1);  // the writer's context, once
  ASSERT_EQ(injected.size(), 4u);
  for (const char* who : {"morning", "noon", "night", "summary"}) {
    EXPECT_EQ(injected[who], card) << who;  // the same card, 3 branches + the join
  }
  // Branches ran on different agents from the same context.
  EXPECT_EQ(t.hops(1).agent(), "writer");
  EXPECT_EQ(t.hops(2).agent(), "continuer");
  EXPECT_EQ(t.hops(3).agent(), "ender");
  for (int k = 1; k <= 4; ++k) {
    EXPECT_EQ(t.hops(k).handoff_in().context_tokens(), t.hops(1).handoff_in().context_tokens());
  }
}

TEST_F(GraphDaemonTest, PausedTaskHoldsNoAgentAndResumesToTheUnpausedOutput) {
  const std::string id = SubmitId(*daemon_, Submit("approve"));
  v1::Task t = WaitForState(*daemon_, id, v1::TASK_STATE_PAUSED);
  ASSERT_EQ(t.state(), v1::TASK_STATE_PAUSED) << t.reason();
  EXPECT_EQ(t.paused_step(), "approval");
  EXPECT_EQ(t.pause_prompt(), "Continue?");
  EXPECT_GT(t.pause_expires_unix_ms(), t.created_unix_ms());
  {
    grpc::ClientContext ctx;
    v1::ListAgentsResponse agents;
    ASSERT_TRUE(daemon_->catalog().ListAgents(&ctx, {}, &agents).ok());
    for (const v1::AgentInfo& a : agents.agents()) EXPECT_EQ(a.state(), "idle") << a.name();
  }
  // max_paused_tasks: 1 -> a second task cannot pause.
  auto second = daemon_->RunTask(Submit("approve"));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->state(), v1::TASK_STATE_FAILED);
  EXPECT_THAT(second->reason(), HasSubstr("limits.max_paused_tasks = 1"));

  const std::string reply = "The sun was shining and they played.";
  ASSERT_TRUE(Resume(*daemon_, id, reply).ok());
  const std::vector<v1::TaskEvent> events = Events(*daemon_, id);
  t = Get(*daemon_, id);
  ASSERT_EQ(t.state(), v1::TASK_STATE_FINISHED) << t.reason();
  EXPECT_THAT(Path(t), ElementsAre("writer:1", "finish:1"));
  bool paused = false, resumed = false;
  for (const v1::TaskEvent& e : events) {
    paused = paused || (e.has_paused() && e.paused().step() == "approval");
    resumed = resumed || (e.has_resumed() && e.resumed().input() == reply);
    if (e.has_route() && e.route().step() == "approval") {
      EXPECT_EQ(e.route().to(), "finish");
      EXPECT_EQ(e.route().reason(), "default (no route matched)");
    }
  }
  EXPECT_TRUE(paused && resumed);

  // The same two hops as a line, unpaused, with the reply as the instruction.
  v1::SubmitTaskRequest line;
  line.set_input(kInput);
  auto* h1 = line.mutable_inline_()->add_hops();
  h1->set_agent("writer");
  h1->set_instruction("{input}");
  h1->mutable_handoff()->set_mode(v1::HANDOFF_MODE_FULL);
  auto* h2 = line.mutable_inline_()->add_hops();
  h2->set_agent("ender");
  h2->set_instruction(absl::StrCat(" ", reply));  // the step's " {input}"
  auto unpaused = daemon_->RunTask(line);
  ASSERT_TRUE(unpaused.ok() && unpaused->state() == v1::TASK_STATE_FINISHED);
  EXPECT_EQ(t.hops(0).output(), unpaused->hops(0).output());
  EXPECT_EQ(t.output(), unpaused->output());
  EXPECT_FALSE(t.output().empty());

  // Resuming a task that is not paused.
  grpc::Status s = Resume(*daemon_, id, "again");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("not PAUSED"));
}

// Issue 16 sessions in a graph: a task started from a kept card pauses at
// its await_input step, holds the card across the pause and keeps its final
// context; the same turns as a line give the same output and the same
// (content-derived) kept card.
TEST_F(GraphDaemonTest, PausedTaskStartsFromACardAndKeepsItsContext) {
  v1::SubmitTaskRequest first;
  first.set_input(kInput);
  auto* h0 = first.mutable_inline_()->add_hops();
  h0->set_agent("writer");
  h0->set_instruction("{input}");
  first.mutable_handoff_override()->set_mode(v1::HANDOFF_MODE_FULL);
  first.set_keep_context(true);
  auto kept = daemon_->RunTask(first);
  ASSERT_TRUE(kept.ok()) << kept.status();
  ASSERT_EQ(kept->state(), v1::TASK_STATE_FINISHED) << kept->reason();
  const std::string card = kept->kept_card();
  ASSERT_EQ(card.size(), 32u);

  v1::SubmitTaskRequest graph = Submit("approve");
  graph.set_input(" Then");
  graph.set_context_card(card);
  graph.set_keep_context(true);
  const std::string id = SubmitId(*daemon_, graph);
  v1::Task t = WaitForState(*daemon_, id, v1::TASK_STATE_PAUSED);
  ASSERT_EQ(t.state(), v1::TASK_STATE_PAUSED) << t.reason();
  EXPECT_EQ(t.context_card(), card);
  EXPECT_TRUE(t.kept_card().empty());
  const std::string reply = "They went home.";
  ASSERT_TRUE(Resume(*daemon_, id, reply).ok());
  t = WaitForState(*daemon_, id, v1::TASK_STATE_FINISHED);
  ASSERT_EQ(t.state(), v1::TASK_STATE_FINISHED) << t.reason();
  EXPECT_THAT(Path(t), ElementsAre("writer:1", "finish:1"));
  ASSERT_EQ(t.hops_size(), 2);
  EXPECT_TRUE(t.hops(0).kept_card().empty());  // not the step that ended the task
  EXPECT_EQ(t.hops(1).kept_card(), t.kept_card());
  ASSERT_EQ(t.kept_card().size(), 32u);
  EXPECT_NE(t.kept_card(), card);
  EXPECT_FALSE(t.output().empty());

  // The same turns as a line from the same card, unpaused.
  v1::SubmitTaskRequest line;
  line.set_input(" Then");
  line.set_context_card(card);
  line.set_keep_context(true);
  line.mutable_handoff_override()->set_mode(v1::HANDOFF_MODE_FULL);
  auto* l1 = line.mutable_inline_()->add_hops();
  l1->set_agent("writer");
  l1->set_instruction("{input}");
  auto* l2 = line.mutable_inline_()->add_hops();
  l2->set_agent("ender");
  l2->set_instruction(absl::StrCat(" ", reply));  // the step's " {input}"
  auto unpaused = daemon_->RunTask(line);
  ASSERT_TRUE(unpaused.ok()) << unpaused.status();
  ASSERT_EQ(unpaused->state(), v1::TASK_STATE_FINISHED) << unpaused->reason();
  EXPECT_EQ(t.hops(0).output(), unpaused->hops(0).output());
  EXPECT_EQ(t.output(), unpaused->output());
  EXPECT_EQ(t.kept_card(), unpaused->kept_card());
}

TEST_F(GraphDaemonTest, CancelEndsAPausedTask) {
  const std::string id = SubmitId(*daemon_, Submit("approve"));
  ASSERT_EQ(WaitForState(*daemon_, id, v1::TASK_STATE_PAUSED).state(), v1::TASK_STATE_PAUSED);
  grpc::ClientContext ctx;
  v1::CancelTaskRequest c;
  c.set_task_id(id);
  v1::Task t;
  ASSERT_TRUE(daemon_->tasks().CancelTask(&ctx, c, &t).ok());
  EXPECT_EQ(t.state(), v1::TASK_STATE_CANCELLED);
  // Its pause slot is free again.
  const std::string next = SubmitId(*daemon_, Submit("approve"));
  EXPECT_EQ(WaitForState(*daemon_, next, v1::TASK_STATE_PAUSED).state(), v1::TASK_STATE_PAUSED);
  ASSERT_TRUE(Resume(*daemon_, next, "no").ok());
  v1::Task done = WaitForState(*daemon_, next, v1::TASK_STATE_FINISHED);
  EXPECT_EQ(done.state(), v1::TASK_STATE_FINISHED);
  EXPECT_EQ(done.output(), "no");  // routes[0]: equals "no" -> end
}

TEST(GraphDaemonTtlTest, PausedTaskExpires) {
  auto d =
      DaemonProcess::Start(DaemonProcess::StoriesConfig(8, "limits: {paused_ttl_seconds: 1}\n"),
                           {{"approve.yaml", kApprove}});
  ASSERT_TRUE(d.ok()) << d.status();
  auto t = (*d)->RunTask(Submit("approve"));
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->state(), v1::TASK_STATE_FAILED);
  EXPECT_THAT(t->reason(), HasSubstr("paused at step approval for longer than "
                                     "limits.paused_ttl_seconds (1 s) without ResumeTask"));
}

TEST(GraphDaemonLoadTest, BadGraphIsRejectedAtLoadWithItsLocation) {
  auto d = DaemonProcess::Start(DaemonProcess::StoriesConfig(8),
                                {{"bad.yaml",
                                  "steps:\n  a: {agent: writer, next: b}\n"
                                  "  b: {agent: ender, next: a}\n"}});
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()),
              HasSubstr("bad.yaml:2:6: steps.a: step 'a' is on a cycle and needs max_visits"));
}

}  // namespace
}  // namespace qkvshare

#include "daemon/workflow/executor.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "daemon/testing/stories_env.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::daemon {
namespace {

using ::testing::HasSubstr;
using testing::StoriesEnv;

// Records events and results; never stops.
class FakeContext : public TaskContext {
 public:
  explicit FakeContext(TaskSpec spec) : spec_(std::move(spec)) {}
  const std::string& id() const override { return id_; }
  const TaskSpec& spec() const override { return spec_; }
  absl::Status CheckStop() const override { return absl::OkStatus(); }
  void Emit(v1::TaskEvent event) override {
    absl::MutexLock lock(&mu_);
    events.push_back(std::move(event));
  }
  void AddHopResult(const v1::HopResult& result) override {
    absl::MutexLock lock(&mu_);
    results.push_back(result);
  }
  absl::Status Pause(std::unique_ptr<TaskCheckpoint> cp, const std::string& step,
                     const std::string& prompt) override {
    checkpoint = std::move(cp);
    paused_step = step;
    pause_prompt = prompt;
    return absl::OkStatus();
  }
  std::unique_ptr<TaskCheckpoint> TakeCheckpoint() override { return std::move(checkpoint); }
  std::string resume_input() const override { return input; }
  // "step:visit[/branch]" per result.
  std::vector<std::string> Path() const {
    std::vector<std::string> out;
    for (const v1::HopResult& r : results) {
      out.push_back(
          absl::StrCat(r.step(), ":", r.visit(), r.branch().empty() ? "" : "/", r.branch()));
    }
    return out;
  }

  std::unique_ptr<TaskCheckpoint> checkpoint;
  std::string paused_step, pause_prompt, input;
  // Event kinds in order, tokens left out.
  std::vector<std::string> Kinds() const {
    std::vector<std::string> out;
    for (const v1::TaskEvent& e : events) {
      if (e.has_token()) continue;
      out.push_back(e.GetDescriptor()->FindFieldByNumber(e.event_case())->name());
    }
    return out;
  }

  std::vector<v1::TaskEvent> events;
  std::vector<v1::HopResult> results;

 private:
  absl::Mutex mu_;
  std::string id_ = "t-test";
  TaskSpec spec_;
};

ResolvedHop Hop(const std::string& agent, const std::string& instruction, HandoffMode mode) {
  ResolvedHop h;
  h.agent = agent;
  h.instruction = instruction;
  h.generation = {10, 0.0f, 0, 1.0f, 0, std::vector<std::string>{}};
  h.handoff.mode = mode;
  return h;
}

TEST(ExecutorTest, LineRunsHopsInOrderWithHandoffsBetween) {
  auto env = StoriesEnv::Create(10);
  ASSERT_TRUE(env.ok()) << env.status();
  Handoff handoff((*env)->store.get(), &(*env)->stats, (*env)->config.limits);
  ExecutorDeps deps{(*env)->pool.get(), &handoff, &(*env)->stats};
  TaskSpec spec;
  spec.input = "Once upon a time";
  spec.hops = {Hop("writer", "{input}", HandoffMode::kCard),
               Hop("continuer", " Then {hop}", HandoffMode::kFull),
               Hop("ender", " In the end,", HandoffMode::kCard)};
  FakeContext ctx(spec);
  absl::StatusOr<std::string> out = RunTask(ctx, deps);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(ctx.Kinds(),
              ::testing::ElementsAre("hop_started", "card_built", "hop_finished",  // writer
                                     "hop_started", "handoff", "card_built", "hop_finished",
                                     "hop_started", "handoff", "hop_finished"));
  ASSERT_EQ(ctx.results.size(), 3u);
  EXPECT_EQ(ctx.results[0].agent(), "writer");
  EXPECT_EQ(ctx.results[2].agent(), "ender");
  EXPECT_EQ(*out, ctx.results[2].output());
  EXPECT_EQ(ctx.results[1].handoff_in().mode(), v1::HANDOFF_MODE_CARD);
  EXPECT_EQ(ctx.results[2].handoff_in().mode(), v1::HANDOFF_MODE_FULL);
  EXPECT_FALSE(ctx.results[0].has_handoff_in());
  EXPECT_EQ((*env)->stats.Get(Stats::kCardsBuilt), 2);
  EXPECT_EQ((*env)->stats.Get(Stats::kCardsInjected), 2);
  EXPECT_EQ((*env)->stats.Get(Stats::kHopsRun), 3);
}

TEST(ExecutorTest, ErrorsNameTheHop) {
  auto env = StoriesEnv::Create(10, "limits: {max_context_tokens: 8}\n");
  ASSERT_TRUE(env.ok()) << env.status();
  Handoff handoff((*env)->store.get(), &(*env)->stats, (*env)->config.limits);
  ExecutorDeps deps{(*env)->pool.get(), &handoff, &(*env)->stats};
  TaskSpec spec;
  spec.input = "Once upon a time, there was a little girl named Lily who loved to play.";
  spec.hops = {Hop("writer", "{input}", HandoffMode::kCard), Hop("ender", "", HandoffMode::kCard)};
  FakeContext ctx(spec);
  absl::StatusOr<std::string> out = RunTask(ctx, deps);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(out.status().message(), HasSubstr("hop 1/2 (writer): the prompt is more than"));
  EXPECT_THAT(out.status().message(), HasSubstr("over the context limit"));
  EXPECT_TRUE(ctx.results.empty());
}

ResolvedStep AgentStep(const std::string& name, const std::string& agent,
                       const std::string& instruction) {
  ResolvedStep s;
  s.config.name = name;
  s.config.agent = agent;
  s.config.instruction = instruction;
  s.hop = Hop(agent, instruction, HandoffMode::kCard);
  return s;
}

// Graph specs on a stories260K pool: store, handoff component, executor deps
// and a spec (input set, max_steps 10) for the test to fill in.
class GraphTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto env = StoriesEnv::Create(6);
    ASSERT_TRUE(env.ok()) << env.status();
    env_ = std::move(*env);
    handoff_ = std::make_unique<Handoff>(env_->store.get(), &env_->stats, env_->config.limits);
    deps_ = {env_->pool.get(), handoff_.get(), &env_->stats};
    spec_.input = "Once upon a time";
    spec_.max_steps = 10;
  }

  std::unique_ptr<StoriesEnv> env_;
  std::unique_ptr<Handoff> handoff_;
  ExecutorDeps deps_;
  TaskSpec spec_;
};

TEST_F(GraphTest, LoopTakesOnLimitAtTheBound) {
  spec_.steps = {AgentStep("w", "writer", "{input}"), AgentStep("c", "continuer", " visit {visit}"),
                 AgentStep("f", "ender", " The end.")};
  spec_.steps[0].config.max_visits = 2;
  spec_.steps[0].config.next = "c";
  spec_.steps[1].config.routes = {{RouteConfig::Test::kContains, "zqzqzq", "f", ""}};
  spec_.steps[1].config.default_to = "w";
  spec_.steps[1].config.max_visits = 2;
  spec_.steps[0].config.on_limit = "f";
  FakeContext ctx(spec_);
  absl::StatusOr<std::string> out = RunTask(ctx, deps_);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(ctx.Path(), ::testing::ElementsAre("w:1", "c:1", "w:2", "c:2", "f:1"));
  EXPECT_EQ(ctx.results[3].route(), "f");
  EXPECT_EQ(ctx.results[3].route_reason(),
            "default (no route matched); step w is at max_visits 2: on_limit -> f");
  EXPECT_EQ(ctx.results[4].route(), "end");
  // Each pass builds one incremental card; the last step builds none.
  EXPECT_EQ(env_->stats.Get(Stats::kCardsBuilt), 4);
  EXPECT_EQ(env_->stats.Get(Stats::kCardsInjected), 4);

  // Without on_limit the task fails naming the bound; max_steps is a bound too.
  spec_.steps[0].config.on_limit.clear();
  FakeContext fail(spec_);
  out = RunTask(fail, deps_);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(out.status().message(), "step c, visit 2/2: step w reached max_visits 2 (no on_limit)");
  spec_.max_steps = 2;
  FakeContext steps(spec_);
  out = RunTask(steps, deps_);
  EXPECT_EQ(out.status().message(), "step c, visit 1/2: max_steps 2 reached before step w");
}

TEST_F(GraphTest, FanOutInjectsOneCardPerBranchAndIntoTheJoin) {
  ResolvedStep fan;
  fan.config.name = "fan";
  fan.config.join = "j";
  for (const char* agent : {"writer", "continuer", "ender"}) {
    fan.config.parallel.push_back({absl::StrCat("b_", agent), agent, " Then", {}});
    fan.branches.push_back(Hop(agent, " Then", HandoffMode::kCard));
  }
  spec_.steps = {AgentStep("w", "writer", "{input}"), std::move(fan),
                 AgentStep("j", "ender", " {branch.b_writer}|{branches}")};
  spec_.steps[0].config.next = "fan";
  FakeContext ctx(spec_);
  absl::StatusOr<std::string> out = RunTask(ctx, deps_);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(ctx.Path(), ::testing::ElementsAre("w:1", "fan:1/b_writer", "fan:1/b_continuer",
                                                 "fan:1/b_ender", "j:1"));
  EXPECT_EQ(env_->stats.Get(Stats::kCardsBuilt), 1);
  EXPECT_EQ(env_->stats.Get(Stats::kCardsInjected), 4);
  const std::string card = ctx.results[1].handoff_in().card_id();
  EXPECT_FALSE(card.empty());
  for (int k = 2; k <= 4; ++k) EXPECT_EQ(ctx.results[k].handoff_in().card_id(), card);
  // Greedy branches from the same context with the same instruction agree.
  EXPECT_EQ(ctx.results[1].output(), ctx.results[2].output());
  EXPECT_EQ(ctx.results[2].output(), ctx.results[3].output());
}

TEST_F(GraphTest, AwaitInputPausesAndResumesFromTheCheckpoint) {
  ResolvedStep wait;
  wait.config.name = "wait";
  wait.config.await_input = "Go on?";
  wait.config.routes = {{RouteConfig::Test::kEquals, "no", "end", ""}};
  wait.config.default_to = "f";
  spec_.steps = {AgentStep("w", "writer", "{input}"), std::move(wait),
                 AgentStep("f", "ender", " {input}")};
  spec_.steps[0].config.next = "wait";
  FakeContext ctx(spec_);
  absl::StatusOr<std::string> out = RunTask(ctx, deps_);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_NE(ctx.checkpoint, nullptr);
  EXPECT_EQ(ctx.paused_step, "wait");
  EXPECT_EQ(ctx.pause_prompt, "Go on?");
  EXPECT_EQ(env_->pool->busy(), 0);  // no agent held while paused
  EXPECT_EQ(env_->stats.Get(Stats::kCardsBuilt), 1);
  ctx.input = "The sun was out.";
  out = RunTask(ctx, deps_);  // resumed
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(ctx.checkpoint, nullptr);
  EXPECT_THAT(ctx.Path(), ::testing::ElementsAre("w:1", "f:1"));
  EXPECT_EQ(*out, ctx.results[1].output());
  EXPECT_EQ(ctx.results[1].handoff_in().mode(), v1::HANDOFF_MODE_CARD);
  EXPECT_EQ(env_->stats.Get(Stats::kCardsInjected), 1);
}

TEST(ExecutorTest, ExpandInstruction) {
  EXPECT_EQ(ExpandInstruction("{input}|{previous}|{hop}|{other}", "in", "prev", 3),
            "in|prev|3|{other}");
}

}  // namespace
}  // namespace qkvshare::daemon

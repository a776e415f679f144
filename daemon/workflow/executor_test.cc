#include "daemon/workflow/executor.h"

#include <memory>
#include <string>
#include <vector>

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
  EXPECT_THAT(out.status().message(), HasSubstr("hop 1/2 (writer): context of"));
  EXPECT_TRUE(ctx.results.empty());
}

TEST(ExecutorTest, ExpandInstruction) {
  EXPECT_EQ(ExpandInstruction("{input}|{previous}|{hop}|{other}", "in", "prev", 3),
            "in|prev|3|{other}");
}

}  // namespace
}  // namespace qkvshare::daemon

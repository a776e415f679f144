#include "qkvctl/task_progress.h"

#include <algorithm>
#include <sstream>

#include "gtest/gtest.h"
#include "qkvctl/testing/fake_daemon.h"

namespace qkvshare::qkvctl {
namespace {

using ::qkvshare::qkvctl::testing::ScriptTask;

TEST(TaskProgressTest, TracksHopsAndTheFinalState) {
  v1::Task task;
  std::vector<v1::TaskEvent> events =
      ScriptTask("t-1", {"writer", "ender"}, v1::TASK_STATE_FINISHED, &task);
  std::ostringstream out;
  TaskProgress p(out, /*json=*/false);
  for (const v1::TaskEvent& e : events) {
    EXPECT_FALSE(p.ended());
    p.OnEvent(e);
  }
  EXPECT_TRUE(p.ended());
  EXPECT_EQ(p.final_state(), v1::TASK_STATE_FINISHED);
  EXPECT_EQ(p.next_seq(), static_cast<int64_t>(events.size()));
  ASSERT_EQ(p.hops().size(), 2u);
  EXPECT_EQ(p.hops()[1].agent(), "ender");
  EXPECT_EQ(out.str(),
            "[hop 1/2 writer]\n"
            "Once upon a time there was a cat.\n"
            "[card 01cafe000000: 18 tokens, 12.1 KiB, 4.02 bits, built in 1.2 ms]\n"
            "[hop 1/2 writer: 8 tokens, 250.0 tok/s, TTFT 4.5 ms, stop max_new_tokens]\n"
            "[hop 2/2 ender]\n"
            "[handoff to hop 2: card, 12.1 KiB, injected in 0.8 ms]\n"
            "Once upon a time there was a cat.\n"
            "[hop 2/2 ender: 8 tokens, 240.0 tok/s, TTFT 5.5 ms, stop max_new_tokens]\n"
            "[task t-1 finished]\n");
}

TEST(TaskProgressTest, TokenEndingInNewlineNeedsNoExtraBreak) {
  std::ostringstream out;
  TaskProgress p(out, /*json=*/false);
  v1::TaskEvent e;
  e.set_task_id("t");
  e.mutable_hop_started()->set_num_hops(1);
  e.mutable_hop_started()->set_agent("a");
  p.OnEvent(e);
  e.mutable_token()->set_text("line\n");
  p.OnEvent(e);
  e.mutable_failed()->set_state(v1::TASK_STATE_FAILED);
  e.mutable_failed()->set_reason("deadline exceeded");
  p.OnEvent(e);
  EXPECT_EQ(out.str(), "[hop 1/1 a]\nline\n[task t failed: deadline exceeded]\n");
  EXPECT_EQ(p.final_state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(p.reason(), "deadline exceeded");
  EXPECT_TRUE(p.hops().empty());
}

TEST(TaskProgressTest, JsonWritesOneLinePerEventAndNothingElse) {
  v1::Task task;
  std::vector<v1::TaskEvent> events =
      ScriptTask("t-1", {"writer"}, v1::TASK_STATE_CANCELLED, &task);
  std::ostringstream out;
  TaskProgress p(out, /*json=*/true);
  for (const v1::TaskEvent& e : events) p.OnEvent(e);
  std::string s = out.str();
  EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), static_cast<long>(events.size()));
  EXPECT_EQ(s.find("[hop"), std::string::npos);
  EXPECT_EQ(p.final_state(), v1::TASK_STATE_CANCELLED);
}

}  // namespace
}  // namespace qkvshare::qkvctl

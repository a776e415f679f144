#include "daemon/task_manager.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::daemon {
namespace {

TaskSpec Spec(const std::string& input, int hops = 2) {
  TaskSpec s;
  s.workflow = "wf";
  s.input = input;
  s.hops.resize(hops);
  return s;
}

// Emits one token event per hop and returns input + "!", or, for input
// "block", loops until stopped.
absl::StatusOr<std::string> FakeRun(TaskContext& ctx) {
  if (ctx.spec().input == "block") {
    while (true) {
      if (absl::Status s = ctx.CheckStop(); !s.ok()) return s;
      absl::SleepFor(absl::Milliseconds(2));
    }
  }
  if (ctx.spec().input == "fail") return absl::InternalError("boom");
  for (size_t h = 0; h < ctx.spec().hops.size(); ++h) {
    v1::TaskEvent ev;
    ev.mutable_token()->set_hop(static_cast<int>(h));
    ev.mutable_token()->set_text("x");
    ctx.Emit(ev);
    v1::HopResult r;
    r.set_index(static_cast<int>(h));
    r.set_output(ctx.spec().input + std::to_string(h));
    ctx.AddHopResult(r);
  }
  return ctx.spec().input + "!";
}

v1::Task WaitEnded(TaskManager& m, const std::string& id) {
  std::vector<v1::TaskEvent> events;
  EXPECT_TRUE(m.Watch(
                   id, 0,
                   [&](const v1::TaskEvent& e) {
                     events.push_back(e);
                     return true;
                   },
                   [] { return true; })
                  .ok());
  return m.Get(id).value();
}

TEST(TaskManagerTest, RunsTasksAndRecordsEventsAndResults) {
  std::vector<v1::Task> ended;
  absl::Mutex mu;
  TaskManager m({2, 4, 16}, FakeRun, [&](const v1::Task& t) {
    absl::MutexLock l(&mu);
    ended.push_back(t);
  });
  m.Start();
  std::string id = m.Submit(Spec("hi")).value();
  v1::Task t = WaitEnded(m, id);
  EXPECT_EQ(t.state(), v1::TASK_STATE_FINISHED);
  EXPECT_EQ(t.output(), "hi!");
  ASSERT_EQ(t.hops_size(), 2);
  EXPECT_EQ(t.hops(1).output(), "hi1");
  // queued, 2 tokens, finished; seq numbers are dense from 0.
  std::vector<v1::TaskEvent> events;
  ASSERT_TRUE(m.Watch(
                   id, 1,
                   [&](const v1::TaskEvent& e) {
                     events.push_back(e);
                     return true;
                   },
                   [] { return true; })
                  .ok());
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].seq(), 1);
  EXPECT_TRUE(events[0].has_token());
  EXPECT_TRUE(events[2].has_finished());
  EXPECT_EQ(events[2].finished().output(), "hi!");
  m.Shutdown(absl::Seconds(1));
  ASSERT_EQ(ended.size(), 1u);
  EXPECT_EQ(ended[0].id(), id);
}

// Issue 18 item 7: watchers are capped per task and in total.
TEST(TaskManagerTest, WatcherCapsAreResourceExhausted) {
  TaskManager::Options options{1, 4, 16};
  options.max_watchers = 3;
  options.max_watchers_per_task = 2;
  TaskManager m(options, FakeRun);
  m.Start();
  const std::string a = m.Submit(Spec("block")).value();
  const std::string b = m.Submit(Spec("block")).value();
  std::atomic<bool> stop{false};
  // The probes below are watchers too, for a moment: a watcher refused
  // because of one tries again (without that, a slow thread start, e.g.
  // under TSan, left the cap unreachable and the test failed after 20 s).
  auto watch = [&](const std::string& id) {
    while (true) {
      absl::Status s = m.Watch(
          id, 0, [](const v1::TaskEvent&) { return true; }, [&] { return !stop.load(); });
      if (s.code() != absl::StatusCode::kResourceExhausted || stop.load()) return s;
      absl::SleepFor(absl::Milliseconds(1));
    }
  };
  std::vector<std::thread> watchers;
  for (int i = 0; i < 2; ++i) watchers.emplace_back([&] { watch(a); });
  // A third watcher of `a` is refused once both are registered.
  absl::Status third;
  std::atomic<bool> never{false};
  for (absl::Time end = absl::Now() + absl::Seconds(20); absl::Now() < end;
       absl::SleepFor(absl::Milliseconds(2))) {
    third = m.Watch(
        a, 0, [](const v1::TaskEvent&) { return true; }, [&] { return never.load(); });
    if (third.code() == absl::StatusCode::kResourceExhausted) break;
  }
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(third.message()), ::testing::HasSubstr("too many watchers of task"));
  watchers.emplace_back([&] { watch(b); });  // the third in total
  absl::Status fourth;
  for (absl::Time end = absl::Now() + absl::Seconds(20); absl::Now() < end;
       absl::SleepFor(absl::Milliseconds(2))) {
    fourth = m.Watch(
        b, 0, [](const v1::TaskEvent&) { return true; }, [&] { return never.load(); });
    if (fourth.code() == absl::StatusCode::kResourceExhausted) break;
  }
  EXPECT_EQ(fourth.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(fourth.message()), ::testing::HasSubstr("limit 3"));
  stop = true;
  for (std::thread& t : watchers) t.join();
  // Released: a watcher is accepted again (and ends: still_wanted is false).
  EXPECT_EQ(m.Watch(
                 a, 0, [](const v1::TaskEvent&) { return true; }, [] { return false; })
                .code(),
            absl::StatusCode::kCancelled);
  m.Cancel(a, "done").IgnoreError();
  m.Cancel(b, "done").IgnoreError();
  m.Shutdown(absl::Seconds(1));
}

TEST(TaskManagerTest, FailureCarriesReason) {
  TaskManager m({1, 1, 16}, FakeRun);
  m.Start();
  v1::Task t = WaitEnded(m, m.Submit(Spec("fail")).value());
  EXPECT_EQ(t.state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(t.reason(), "INTERNAL: boom");
}

TEST(TaskManagerTest, QueueFullIsResourceExhausted) {
  TaskManager m({1, 1, 16}, FakeRun);
  m.Start();
  std::string a = m.Submit(Spec("block")).value();
  std::string b = m.Submit(Spec("block")).value();
  absl::StatusOr<std::string> c = m.Submit(Spec("block"));
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  // Cancelling the queued one ends it at once and frees a slot.
  v1::Task tb = m.Cancel(b, "client asked").value();
  EXPECT_EQ(tb.state(), v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(tb.reason(), "client asked");
  EXPECT_TRUE(m.Submit(Spec("hi")).ok());
  // Cancelling the running one ends it at its next check.
  ASSERT_TRUE(m.Cancel(a, "stop").ok());
  EXPECT_EQ(WaitEnded(m, a).state(), v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(m.Cancel("t-nope", "x").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m.Get("t-nope").status().code(), absl::StatusCode::kNotFound);
}

TEST(TaskManagerTest, DeadlineExceededFails) {
  TaskManager m({1, 1, 16}, FakeRun);
  m.Start();
  TaskSpec s = Spec("block");
  s.deadline = absl::Now() + absl::Milliseconds(30);
  v1::Task t = WaitEnded(m, m.Submit(s).value());
  EXPECT_EQ(t.state(), v1::TASK_STATE_FAILED);
  EXPECT_EQ(t.reason(), "DEADLINE_EXCEEDED: deadline exceeded");
}

TEST(TaskManagerTest, WatcherThatLeavesDoesNotDisturbTheTask) {
  TaskManager m({1, 1, 16}, FakeRun);
  m.Start();
  std::string id = m.Submit(Spec("block")).value();
  int seen = 0;
  absl::Status s = m.Watch(
      id, 0, [&](const v1::TaskEvent&) { return ++seen < 1; }, [] { return true; });
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled);
  std::atomic<bool> wanted{true};
  std::thread stopper([&] {
    absl::SleepFor(absl::Milliseconds(50));
    wanted = false;
  });
  s = m.Watch(
      id, 1, [](const v1::TaskEvent&) { return true; }, [&] { return wanted.load(); });
  stopper.join();
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(m.Get(id)->state(), v1::TASK_STATE_RUNNING);
  // A second watcher sees the end.
  ASSERT_TRUE(m.Cancel(id, "done").ok());
  std::vector<v1::TaskEvent> events;
  ASSERT_TRUE(m.Watch(
                   id, 0,
                   [&](const v1::TaskEvent& e) {
                     events.push_back(e);
                     return true;
                   },
                   [] { return true; })
                  .ok());
  EXPECT_TRUE(events.back().has_cancelled());
}

TEST(TaskManagerTest, KeepsOnlyTheNewestEndedTasks) {
  TaskManager m({1, 4, 2}, FakeRun);
  m.Start();
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    ids.push_back(m.Submit(Spec("t" + std::to_string(i))).value());
    WaitEnded(m, ids.back());
  }
  EXPECT_EQ(m.Get(ids[0]).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m.Get(ids[1]).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(m.Get(ids[3]).ok());
  std::vector<v1::Task> list = m.List(0);
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].id(), ids[3]);
  EXPECT_TRUE(list[0].input().empty());  // listings leave text out
}

TEST(TaskManagerTest, ShutdownCancelsQueuedAndRunningAfterGrace) {
  TaskManager m({1, 2, 16}, FakeRun);
  m.Start();
  std::string running = m.Submit(Spec("block")).value();
  std::string queued = m.Submit(Spec("hi")).value();
  absl::SleepFor(absl::Milliseconds(20));
  m.Shutdown(absl::Milliseconds(50));
  v1::Task r = m.Get(running).value();
  EXPECT_EQ(r.state(), v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(r.reason(), "daemon shutting down (grace period over)");
  EXPECT_EQ(m.Get(queued)->state(), v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(m.Submit(Spec("late")).status().code(), absl::StatusCode::kUnavailable);
}

TEST(TaskManagerTest, ShutdownLetsRunningTasksFinishWithinGrace) {
  absl::Notification release;
  TaskManager m({1, 1, 16}, [&](TaskContext&) -> absl::StatusOr<std::string> {
    release.WaitForNotificationWithTimeout(absl::Seconds(5));
    return std::string("done");
  });
  m.Start();
  std::string id = m.Submit(Spec("x")).value();
  absl::SleepFor(absl::Milliseconds(20));
  std::thread t([&] {
    absl::SleepFor(absl::Milliseconds(30));
    release.Notify();
  });
  m.Shutdown(absl::Seconds(5));
  t.join();
  EXPECT_EQ(m.Get(id)->state(), v1::TASK_STATE_FINISHED);
}

// Pauses on the first run (keeping a checkpoint holding `input`); a resumed
// run returns the checkpoint's text + " / " + the resume input.
struct NoteCheckpoint : TaskCheckpoint {
  std::string note;
};
absl::StatusOr<std::string> PausingRun(TaskContext& ctx) {
  if (std::unique_ptr<TaskCheckpoint> cp = ctx.TakeCheckpoint(); cp != nullptr) {
    return static_cast<NoteCheckpoint&>(*cp).note + " / " + ctx.resume_input();
  }
  auto cp = std::make_unique<NoteCheckpoint>();
  cp->note = ctx.spec().input;
  if (absl::Status s = ctx.Pause(std::move(cp), "ask", "Go on?"); !s.ok()) return s;
  return std::string();
}

v1::Task WaitState(TaskManager& m, const std::string& id, v1::TaskState state) {
  for (int i = 0; i < 2000 && m.Get(id)->state() != state; ++i) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  return m.Get(id).value();
}

TEST(TaskManagerTest, PauseFreesTheWorkerAndResumeContinues) {
  TaskManager::Options o{1, 4, 16, /*max_paused=*/1, absl::Seconds(60)};
  TaskManager m(o, PausingRun);
  m.Start();
  const std::string id = m.Submit(Spec("draft")).value();
  v1::Task t = WaitState(m, id, v1::TASK_STATE_PAUSED);
  ASSERT_EQ(t.state(), v1::TASK_STATE_PAUSED);
  EXPECT_EQ(t.paused_step(), "ask");
  EXPECT_EQ(t.pause_prompt(), "Go on?");
  EXPECT_GT(t.pause_expires_unix_ms(), t.created_unix_ms());
  EXPECT_EQ(m.counts().running, 0);  // the only worker is free
  EXPECT_EQ(m.counts().paused, 1);
  // A second task cannot pause (max_paused 1): it fails with the limit.
  const std::string second = m.Submit(Spec("other")).value();
  v1::Task t2 = WaitEnded(m, second);
  EXPECT_EQ(t2.state(), v1::TASK_STATE_FAILED);
  EXPECT_NE(t2.reason().find("limits.max_paused_tasks = 1"), std::string::npos) << t2.reason();

  EXPECT_EQ(m.Resume(second, "x").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(m.Resume("nope", "x").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(m.Resume(id, "more").ok());
  t = WaitEnded(m, id);
  EXPECT_EQ(t.state(), v1::TASK_STATE_FINISHED);
  EXPECT_EQ(t.output(), "draft / more");
  EXPECT_TRUE(t.paused_step().empty());
  EXPECT_EQ(m.counts().paused, 0);
  std::vector<std::string> kinds;
  m.Watch(
       id, 0,
       [&](const v1::TaskEvent& e) {
         if (e.has_paused()) kinds.push_back("paused:" + e.paused().prompt());
         if (e.has_resumed()) kinds.push_back("resumed:" + e.resumed().input());
         return true;
       },
       [] { return true; })
      .IgnoreError();
  EXPECT_EQ(kinds, (std::vector<std::string>{"paused:Go on?", "resumed:more"}));
}

TEST(TaskManagerTest, PausedTasksExpireAndCanBeCancelled) {
  TaskManager::Options o{1, 4, 16, 4, absl::Milliseconds(300)};
  TaskManager m(o, PausingRun);
  m.Start();
  const std::string expiring = m.Submit(Spec("a")).value();
  v1::Task t = WaitEnded(m, expiring);
  EXPECT_EQ(t.state(), v1::TASK_STATE_FAILED);
  EXPECT_NE(t.reason().find("paused at step ask for longer than limits.paused_ttl_seconds"),
            std::string::npos)
      << t.reason();

  TaskManager::Options long_ttl{1, 4, 16, 4, absl::Seconds(60)};
  TaskManager m2(long_ttl, PausingRun);
  m2.Start();
  const std::string id = m2.Submit(Spec("b")).value();
  ASSERT_EQ(WaitState(m2, id, v1::TASK_STATE_PAUSED).state(), v1::TASK_STATE_PAUSED);
  EXPECT_EQ(m2.Cancel(id, "no thanks")->state(), v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(m2.counts().paused, 0);
  // Shutdown cancels paused tasks too.
  const std::string other = m2.Submit(Spec("c")).value();
  ASSERT_EQ(WaitState(m2, other, v1::TASK_STATE_PAUSED).state(), v1::TASK_STATE_PAUSED);
  m2.Shutdown(absl::ZeroDuration());
  EXPECT_EQ(m2.Get(other)->state(), v1::TASK_STATE_CANCELLED);
}

}  // namespace
}  // namespace qkvshare::daemon

#include "daemon/task_manager.h"

#include <spdlog/spdlog.h>

#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace qkvshare::daemon {

namespace {
int64_t NowUnixMs() { return absl::ToUnixMillis(absl::Now()); }
}  // namespace

// One task's state. Every field is guarded by TaskManager::mu_.
class TaskManager::Record {
 public:
  std::string id;
  TaskSpec spec;
  v1::Task task;
  std::vector<v1::TaskEvent> events;
  bool ended = false;
  bool cancel_requested = false;
  std::string cancel_reason;
  // Pause/resume: the runner's checkpoint (set by Pause, taken after
  // Resume), whether the task holds a pause slot, the resume input.
  std::unique_ptr<TaskCheckpoint> checkpoint;
  bool holds_pause_slot = false;
  bool pause_requested = false;
  absl::Time pause_expires = absl::InfiniteFuture();
  std::string resume_input;
  int watchers = 0;       // live Watch() calls
  absl::CondVar changed;  // signalled on every event and at the end
};

class TaskManager::Context : public TaskContext {
 public:
  Context(TaskManager* m, Record* r) : m_(m), r_(r) {}
  const std::string& id() const override { return r_->id; }
  const TaskSpec& spec() const override { return r_->spec; }
  absl::Status CheckStop() const override {
    {
      absl::MutexLock lock(&m_->mu_);
      if (r_->cancel_requested) return absl::CancelledError(r_->cancel_reason);
    }
    if (absl::Now() > r_->spec.deadline) return absl::DeadlineExceededError("deadline exceeded");
    return absl::OkStatus();
  }
  void Emit(v1::TaskEvent event) override {
    absl::MutexLock lock(&m_->mu_);
    m_->AppendEventLocked(r_, std::move(event));
  }
  absl::Status Pause(std::unique_ptr<TaskCheckpoint> checkpoint, const std::string& step,
                     const std::string& prompt) override {
    absl::MutexLock lock(&m_->mu_);
    if (m_->paused_ >= m_->options_.max_paused) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "cannot pause at step ", step, ": ", m_->paused_,
          " task(s) are paused (limits.max_paused_tasks = ", m_->options_.max_paused, ")"));
    }
    ++m_->paused_;
    r_->holds_pause_slot = true;
    r_->pause_requested = true;
    r_->checkpoint = std::move(checkpoint);
    r_->task.set_paused_step(step);
    r_->task.set_pause_prompt(prompt);
    return absl::OkStatus();
  }
  std::unique_ptr<TaskCheckpoint> TakeCheckpoint() override {
    absl::MutexLock lock(&m_->mu_);
    return std::move(r_->checkpoint);
  }
  std::string resume_input() const override {
    absl::MutexLock lock(&m_->mu_);
    return r_->resume_input;
  }
  void AddHopResult(const v1::HopResult& result) override {
    absl::MutexLock lock(&m_->mu_);
    *r_->task.add_hops() = result;
    r_->task.set_output(result.output());
    if (!result.kept_card().empty()) r_->task.set_kept_card(result.kept_card());
  }

 private:
  TaskManager* m_;
  Record* r_;
};

TaskManager::TaskManager(Options options, TaskRunner runner, EndCallback on_end)
    : options_(options), runner_(std::move(runner)), on_end_(std::move(on_end)) {}

TaskManager::~TaskManager() { Shutdown(absl::ZeroDuration()); }

void TaskManager::Start() {
  absl::MutexLock lock(&mu_);
  if (started_) return;
  started_ = true;
  for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  reaper_ = std::thread([this] { ReaperLoop(); });
}

void TaskManager::AppendEventLocked(Record* r, v1::TaskEvent event) {
  event.set_seq(static_cast<int64_t>(r->events.size()));
  event.set_time_unix_ms(NowUnixMs());
  event.set_task_id(r->id);
  r->events.push_back(std::move(event));
  r->task.set_num_events(static_cast<int64_t>(r->events.size()));
  r->changed.SignalAll();
}

void TaskManager::ReaperLoop() {
  while (true) {
    std::vector<std::shared_ptr<Record>> expired;
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(100));
      if (stopping_) return;
      const absl::Time now = absl::Now();
      for (const auto& [id, r] : tasks_) {
        if (r->task.state() == v1::TASK_STATE_PAUSED && now >= r->pause_expires) {
          expired.push_back(r);
        }
      }
    }
    for (auto& r : expired) {
      Finish(r.get(), v1::TASK_STATE_FAILED,
             absl::StrCat("paused at step ", r->task.paused_step(), " for longer than ",
                          "limits.paused_ttl_seconds (", absl::ToInt64Seconds(options_.paused_ttl),
                          " s) without ResumeTask"),
             "");
    }
  }
}

absl::StatusOr<v1::Task> TaskManager::Resume(const std::string& id, const std::string& input) {
  std::shared_ptr<Record> r = Find(id);
  if (r == nullptr) return absl::NotFoundError(absl::StrCat("no task '", id, "'"));
  absl::MutexLock lock(&mu_);
  if (r->task.state() != v1::TASK_STATE_PAUSED) {
    return absl::FailedPreconditionError(
        absl::StrCat("task ", id, " is ", v1::TaskState_Name(r->task.state()).substr(11),
                     ", not PAUSED; only a paused task can be resumed"));
  }
  if (!accepting_) return absl::UnavailableError("the daemon is shutting down");
  --paused_;
  r->holds_pause_slot = false;
  r->resume_input = input;
  r->pause_expires = absl::InfiniteFuture();
  v1::TaskEvent ev;
  ev.mutable_resumed()->set_step(r->task.paused_step());
  ev.mutable_resumed()->set_input(input);
  r->task.clear_paused_step();
  r->task.clear_pause_prompt();
  r->task.clear_pause_expires_unix_ms();
  r->task.set_state(v1::TASK_STATE_QUEUED);
  AppendEventLocked(r.get(), std::move(ev));
  queue_.push_front(r);
  return r->task;
}

absl::StatusOr<std::string> TaskManager::Submit(TaskSpec spec) {
  static absl::BitGen* gen = new absl::BitGen();  // guarded by mu_
  auto r = std::make_shared<Record>();
  absl::MutexLock lock(&mu_);
  if (!accepting_) return absl::UnavailableError("the daemon is shutting down");
  const int capacity = options_.workers + options_.queue_length;
  if (running_ + static_cast<int>(queue_.size()) >= capacity) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "task queue is full (", running_, " running, ", queue_.size(),
        " queued; limits.max_concurrent_tasks + limits.queue_length = ", capacity, ")"));
  }
  r->id = absl::StrFormat("t-%06d-%04x", next_id_++, absl::Uniform<uint32_t>(*gen, 0, 0x10000));
  r->spec = std::move(spec);
  v1::Task& t = r->task;
  t.set_id(r->id);
  t.set_workflow(r->spec.workflow);
  t.set_label(r->spec.label);
  t.set_state(v1::TASK_STATE_QUEUED);
  t.set_input(r->spec.input);
  if (r->spec.context_card) t.set_context_card((*r->spec.context_card)->id().ToHex());
  t.set_num_hops(
      static_cast<int>(r->spec.steps.empty() ? r->spec.hops.size() : r->spec.steps.size()));
  t.set_created_unix_ms(NowUnixMs());
  v1::TaskEvent ev;
  ev.set_seq(0);
  ev.set_time_unix_ms(t.created_unix_ms());
  ev.set_task_id(r->id);
  ev.mutable_queued()->set_position(static_cast<int>(queue_.size()));
  r->events.push_back(ev);
  t.set_num_events(1);
  tasks_[r->id] = r;
  queue_.push_back(r);
  return r->id;
}

void TaskManager::WorkerLoop() {
  while (true) {
    std::shared_ptr<Record> r;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](TaskManager* m)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(m->mu_) { return m->stopping_ || !m->queue_.empty(); },
          this));
      if (queue_.empty()) return;  // stopping
      r = queue_.front();
      queue_.pop_front();
      ++running_;
      r->task.set_state(v1::TASK_STATE_RUNNING);
      r->task.set_started_unix_ms(NowUnixMs());
    }
    Context ctx(this, r.get());
    absl::StatusOr<std::string> out;
    if (absl::Status stop = ctx.CheckStop(); !stop.ok()) {
      out = stop;
    } else {
      out = runner_(ctx);
    }
    bool paused = false;
    if (out.ok()) {
      absl::MutexLock lock(&mu_);
      if (r->pause_requested && r->cancel_requested) {
        out = absl::CancelledError(r->cancel_reason);  // cancelled while pausing
      } else if (r->pause_requested) {
        r->pause_requested = false;
        paused = true;
        r->pause_expires = absl::Now() + options_.paused_ttl;
        r->task.set_state(v1::TASK_STATE_PAUSED);
        r->task.set_pause_expires_unix_ms(absl::ToUnixMillis(r->pause_expires));
        v1::TaskEvent ev;
        ev.mutable_paused()->set_step(r->task.paused_step());
        ev.mutable_paused()->set_prompt(r->task.pause_prompt());
        ev.mutable_paused()->set_expires_unix_ms(r->task.pause_expires_unix_ms());
        AppendEventLocked(r.get(), std::move(ev));
        --running_;
      }
    }
    if (paused) continue;
    if (out.ok()) {
      Finish(r.get(), v1::TASK_STATE_FINISHED, "", *out);
    } else if (out.status().code() == absl::StatusCode::kCancelled) {
      Finish(r.get(), v1::TASK_STATE_CANCELLED, std::string(out.status().message()), "");
    } else {
      Finish(r.get(), v1::TASK_STATE_FAILED, out.status().ToString(), "");
    }
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

void TaskManager::Finish(Record* r, v1::TaskState state, const std::string& reason,
                         const std::string& output) {
  v1::Task snapshot;
  std::unique_ptr<TaskCheckpoint> checkpoint;  // destroyed without the lock
  {
    absl::MutexLock lock(&mu_);
    if (r->ended) return;
    r->ended = true;
    checkpoint = std::move(r->checkpoint);
    if (r->holds_pause_slot) --paused_;
    r->holds_pause_slot = false;
    r->task.clear_pause_expires_unix_ms();
    r->spec.context_card.reset();  // an ended task holds no card
    v1::Task& t = r->task;
    t.set_state(state);
    t.set_reason(reason);
    if (state == v1::TASK_STATE_FINISHED) t.set_output(output);
    t.set_ended_unix_ms(NowUnixMs());
    v1::TaskEvent ev;
    ev.set_seq(static_cast<int64_t>(r->events.size()));
    ev.set_time_unix_ms(t.ended_unix_ms());
    ev.set_task_id(r->id);
    v1::TaskEvent::TaskEnded* end = state == v1::TASK_STATE_FINISHED ? ev.mutable_finished()
                                    : state == v1::TASK_STATE_FAILED ? ev.mutable_failed()
                                                                     : ev.mutable_cancelled();
    end->set_state(state);
    end->set_reason(reason);
    end->set_output(t.output());
    r->events.push_back(std::move(ev));
    t.set_num_events(static_cast<int64_t>(r->events.size()));
    r->changed.SignalAll();
    ended_.push_back(r->id);
    EvictLocked();
    snapshot = t;
  }
  if (on_end_) on_end_(snapshot);
}

void TaskManager::EvictLocked() {
  while (static_cast<int>(ended_.size()) > options_.keep_finished) {
    tasks_.erase(ended_.front());
    ended_.pop_front();
  }
}

std::shared_ptr<TaskManager::Record> TaskManager::Find(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = tasks_.find(id);
  return it == tasks_.end() ? nullptr : it->second;
}

absl::StatusOr<v1::Task> TaskManager::Cancel(const std::string& id, const std::string& reason) {
  std::shared_ptr<Record> r = Find(id);
  if (r == nullptr) return absl::NotFoundError(absl::StrCat("no task '", id, "'"));
  bool was_queued = false;
  {
    absl::MutexLock lock(&mu_);
    if (!r->ended && !r->cancel_requested) {
      r->cancel_requested = true;
      r->cancel_reason = reason;
      was_queued = r->task.state() == v1::TASK_STATE_PAUSED;
      for (auto it = queue_.begin(); it != queue_.end(); ++it) {
        if (it->get() == r.get()) {
          queue_.erase(it);
          was_queued = true;
          break;
        }
      }
    }
  }
  if (was_queued) Finish(r.get(), v1::TASK_STATE_CANCELLED, reason, "");
  return Get(id);
}

absl::StatusOr<v1::Task> TaskManager::Get(const std::string& id) const {
  std::shared_ptr<Record> r = Find(id);
  if (r == nullptr) return absl::NotFoundError(absl::StrCat("no task '", id, "'"));
  absl::MutexLock lock(&mu_);
  return r->task;
}

std::vector<v1::Task> TaskManager::List(int limit) const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Task> out;
  for (const auto& [id, r] : tasks_) {
    v1::Task t = r->task;
    t.clear_input();
    for (v1::HopResult& h : *t.mutable_hops()) h.clear_output();
    out.push_back(std::move(t));
  }
  std::sort(out.begin(), out.end(), [](const v1::Task& a, const v1::Task& b) {
    return a.created_unix_ms() != b.created_unix_ms() ? a.created_unix_ms() > b.created_unix_ms()
                                                      : a.id() > b.id();
  });
  if (limit > 0 && static_cast<int>(out.size()) > limit) out.resize(limit);
  return out;
}

absl::Status TaskManager::Watch(const std::string& id, int64_t from_seq,
                                const std::function<bool(const v1::TaskEvent&)>& send,
                                const std::function<bool()>& still_wanted) const {
  std::shared_ptr<Record> r = Find(id);
  if (r == nullptr) return absl::NotFoundError(absl::StrCat("no task '", id, "'"));
  {
    absl::MutexLock lock(&mu_);
    if (watchers_ >= options_.max_watchers) {
      return absl::ResourceExhaustedError(absl::StrCat("too many watchers: ", watchers_,
                                                       " streams watch tasks (limit ",
                                                       options_.max_watchers, ")"));
    }
    if (r->watchers >= options_.max_watchers_per_task) {
      return absl::ResourceExhaustedError(absl::StrCat("too many watchers of task ", id, ": ",
                                                       r->watchers, " (limit ",
                                                       options_.max_watchers_per_task, ")"));
    }
    ++watchers_;
    ++r->watchers;
  }
  absl::Cleanup release = [this, r] {
    absl::MutexLock lock(&mu_);
    --watchers_;
    --r->watchers;
  };
  int64_t next = std::max<int64_t>(0, from_seq);
  while (true) {
    std::vector<v1::TaskEvent> batch;
    bool ended = false;
    {
      absl::MutexLock lock(&mu_);
      if (next >= static_cast<int64_t>(r->events.size()) && !r->ended) {
        r->changed.WaitWithTimeout(&mu_, absl::Milliseconds(100));
      }
      for (; next < static_cast<int64_t>(r->events.size()); ++next)
        batch.push_back(r->events[next]);
      ended = r->ended && next >= static_cast<int64_t>(r->events.size());
    }
    for (const v1::TaskEvent& ev : batch) {
      if (!send(ev)) return absl::CancelledError("watcher went away");
    }
    if (ended) return absl::OkStatus();
    if (!still_wanted()) return absl::CancelledError("watcher went away");
  }
}

TaskManager::Counts TaskManager::counts() const {
  absl::MutexLock lock(&mu_);
  return {static_cast<int>(queue_.size()), running_, options_.workers + options_.queue_length,
          paused_};
}

void TaskManager::Shutdown(absl::Duration grace) {
  std::vector<std::shared_ptr<Record>> queued;
  {
    absl::MutexLock lock(&mu_);
    if (!accepting_ && workers_.empty()) return;
    accepting_ = false;
    queued.assign(queue_.begin(), queue_.end());
    queue_.clear();
    for (const auto& [id, r] : tasks_) {
      if (r->task.state() == v1::TASK_STATE_PAUSED) queued.push_back(r);
    }
  }
  for (auto& r : queued) {
    {
      absl::MutexLock lock(&mu_);
      r->cancel_requested = true;
      r->cancel_reason = "daemon shutting down";
    }
    Finish(r.get(), v1::TASK_STATE_CANCELLED, "daemon shutting down", "");
  }
  {
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ == 0; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&idle), grace)) {
      spdlog::warn("shutdown: {} task(s) still running after the {} grace period; cancelling",
                   running_, absl::FormatDuration(grace));
      for (auto& [id, r] : tasks_) {
        if (!r->ended && !r->cancel_requested) {
          r->cancel_requested = true;
          r->cancel_reason = "daemon shutting down (grace period over)";
        }
      }
    }
    stopping_ = true;
  }
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  if (reaper_.joinable()) reaper_.join();
}

}  // namespace qkvshare::daemon

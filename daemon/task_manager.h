// File: daemon/task_manager.h
// -----------------------------------------------------------------------------
// TaskManager: the daemon's task scheduler. A bounded queue feeds a fixed pool
// of worker threads (limits.max_concurrent_tasks); each task runs on one
// worker through a TaskRunner (in the daemon: the workflow executor). Every
// accepted task ends in exactly one of FINISHED, FAILED (with reason) or
// CANCELLED. A runner may pause its task (TaskContext::Pause): it is then
// PAUSED, holding no worker, until Resume() queues it again, Cancel() ends it
// or `paused_ttl` passes (FAILED); shutdown cancels it. A task's
// events are kept (for WatchTask replay) until it is evicted, oldest first,
// beyond `keep_finished_tasks` ended tasks.
//
// Lifecycle: construct -> Start() -> Submit/Watch/Cancel/... -> Shutdown().
// Shutdown() stops accepting (Submit -> Unavailable), cancels queued tasks,
// gives running tasks up to `grace` to finish, cancels the rest, joins workers.
// The destructor calls Shutdown(absl::ZeroDuration()) if needed.
//
// Thread safety: all public methods are thread-safe.
#ifndef QKVSHARE_DAEMON_TASK_MANAGER_H_
#define QKVSHARE_DAEMON_TASK_MANAGER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "daemon/task.h"
#include "qkvshare/v1/tasks.pb.h"

namespace qkvshare::daemon {

// Runs a task to completion; returns the final output text, or an error
// (CheckStop()'s status when it stopped on cancellation/deadline).
using TaskRunner = std::function<absl::StatusOr<std::string>(TaskContext&)>;

class TaskManager {
 public:
  struct Options {
    int workers = 2;                             // tasks running at once
    int queue_length = 16;                       // tasks waiting beyond the running ones
    int keep_finished = 256;                     // ended tasks kept for GetTask/WatchTask
    int max_paused = 16;                         // PAUSED tasks at once (limits.max_paused_tasks)
    absl::Duration paused_ttl = absl::Hours(1);  // then FAILED (limits.paused_ttl_seconds)
    // Concurrent Watch() calls (each holds a gRPC thread): in total, and
    // on one task.
    int max_watchers = 256;
    int max_watchers_per_task = 32;
  };

  // Called once per ended task with its final record (for stats and logs).
  using EndCallback = std::function<void(const v1::Task&)>;

  TaskManager(Options options, TaskRunner runner, EndCallback on_end = nullptr);
  ~TaskManager();
  TaskManager(const TaskManager&) = delete;
  TaskManager& operator=(const TaskManager&) = delete;

  void Start();

  // Queues a task; returns its id. Errors: ResourceExhausted (queue full),
  // Unavailable (shutting down).
  absl::StatusOr<std::string> Submit(TaskSpec spec);

  // Requests cancellation (queued: ends at once; running: at the next check).
  // Returns the task's record. Errors: NotFound.
  absl::StatusOr<v1::Task> Cancel(const std::string& id, const std::string& reason);

  // Continues a PAUSED task: queues it again (ahead of new tasks) with
  // `input` for TaskContext::resume_input(). Returns its record. Errors:
  // NotFound, FailedPrecondition (not paused), Unavailable (shutting down).
  absl::StatusOr<v1::Task> Resume(const std::string& id, const std::string& input);

  // Snapshot of a task. Errors: NotFound.
  absl::StatusOr<v1::Task> Get(const std::string& id) const;
  // Newest first; at most `limit` (0: all).
  std::vector<v1::Task> List(int limit) const;

  // Calls `send` for each event from `from_seq` on, waiting for new ones,
  // until the task's final event has been sent (returns OK), `send` returns
  // false (the watcher went away: returns Cancelled) or `still_wanted`
  // returns false (checked at least every 100 ms). `send` runs without locks
  // held. Errors: NotFound; ResourceExhausted beyond
  // Options::max_watchers in total or max_watchers_per_task on this task.
  absl::Status Watch(const std::string& id, int64_t from_seq,
                     const std::function<bool(const v1::TaskEvent&)>& send,
                     const std::function<bool()>& still_wanted) const;

  struct Counts {
    int queued = 0;
    int running = 0;
    int capacity = 0;  // workers + queue_length
    int paused = 0;
  };
  Counts counts() const;

  // See the class comment. Idempotent.
  void Shutdown(absl::Duration grace);

 private:
  class Record;
  class Context;

  void WorkerLoop();
  // Fails paused tasks past their TTL; runs until Shutdown.
  void ReaperLoop();
  // Appends an event (seq, time, task id filled in) and wakes watchers.
  void AppendEventLocked(Record* r, v1::TaskEvent event) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Finish(Record* r, v1::TaskState state, const std::string& reason, const std::string& output)
      ABSL_LOCKS_EXCLUDED(mu_);
  void EvictLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<Record> Find(const std::string& id) const ABSL_LOCKS_EXCLUDED(mu_);

  const Options options_;
  const TaskRunner runner_;
  const EndCallback on_end_;

  mutable absl::Mutex mu_;
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int paused_ ABSL_GUARDED_BY(mu_) = 0;  // tasks holding a pause slot
  mutable int watchers_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<std::shared_ptr<Record>> queue_ ABSL_GUARDED_BY(mu_);
  // All kept tasks by id, and ended ids in end order (for eviction).
  std::map<std::string, std::shared_ptr<Record>> tasks_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> ended_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> workers_;
  std::thread reaper_;
};

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_TASK_MANAGER_H_

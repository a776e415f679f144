// File: qkvctl/task_progress.h
// -----------------------------------------------------------------------------
// TaskProgress renders a task's WatchTask event stream as it arrives (used by
// `submit --wait` and `watch`) and remembers what the end-of-task table and
// the exit code need.
//
// Human mode writes the generated text token by token, framed per hop:
//   [hop 1/3 writer]
//   Once upon a time ...
//   [card 3f2a9c1e7b40: 60 tokens, 12.3 KiB, 4.02 bits, built in 1.2 ms]
//   [hop 1/3 writer: 48 tokens, 312.5 tok/s, TTFT 4.1 ms, stop max_new_tokens]
//   [handoff to hop 2: card, 12.3 KiB, injected in 0.8 ms]
//   ...
//   [task t-000001 finished]
// and flushes after every event, so text appears live. JSON mode writes each
// event as one line of proto3 JSON (JSON Lines).
//
// Thread safety: thread-compatible (one stream, one thread).
//
// Example:
//   TaskProgress progress(std::cout, /*json=*/false);
//   client->WatchTask(request, [&](const v1::TaskEvent& e) { progress.OnEvent(e); return true; });
//   if (progress.ended()) std::cout << FormatHopTable(progress.hops());
#ifndef QKVSHARE_QKVCTL_TASK_PROGRESS_H_
#define QKVSHARE_QKVCTL_TASK_PROGRESS_H_

#include <ostream>
#include <string>
#include <vector>

#include "qkvshare/v1/tasks.pb.h"

namespace qkvshare::qkvctl {

namespace v1 = ::qkvshare::v1;

class TaskProgress {
 public:
  TaskProgress(std::ostream& out, bool json) : out_(out), json_(json) {}

  // Renders one event (events must come in seq order).
  void OnEvent(const v1::TaskEvent& event);

  // True once a finished/failed/cancelled event arrived.
  bool ended() const { return final_state_ != v1::TASK_STATE_UNSPECIFIED; }
  // FINISHED, FAILED or CANCELLED once ended(); UNSPECIFIED before.
  v1::TaskState final_state() const { return final_state_; }
  const std::string& reason() const { return reason_; }
  // Results of the hops that finished, in order.
  const std::vector<v1::HopResult>& hops() const { return hops_; }
  // True once a paused event arrived (the task waits for ResumeTask).
  bool paused() const { return paused_; }
  // Events seen (the next from_seq to resume from).
  int64_t next_seq() const { return next_seq_; }

 private:
  // Starts a new line unless the output is at the start of one.
  void NewLine();
  void Line(const std::string& text);

  std::ostream& out_;
  const bool json_;
  bool paused_ = false;
  bool at_line_start_ = true;
  int num_hops_ = 0;
  std::vector<std::string> hop_agents_;
  std::vector<v1::HopResult> hops_;
  v1::TaskState final_state_ = v1::TASK_STATE_UNSPECIFIED;
  std::string reason_;
  int64_t next_seq_ = 0;
};

}  // namespace qkvshare::qkvctl

#endif  // QKVSHARE_QKVCTL_TASK_PROGRESS_H_

// File: qkvctl/testing/fake_daemon.h
// -----------------------------------------------------------------------------
// FakeDaemon: an in-process gRPC server implementing the qkvshare.v1
// services (Admin, Catalog, Task, Card) over canned, editable state, bound to
// a Unix socket in a fresh /tmp directory. For qkvctl's tests: no model, no
// agents, deterministic replies.
//
// Behaviour: SubmitTask checks the workflow (NOT_FOUND), the input (empty:
// INVALID_ARGUMENT), handoff bits (2..8 or 16, else INVALID_ARGUMENT) and
// `submit_error`, then records the request and scripts a task whose events
// (queued, per hop: hop_started, tokens, card_built, handoff, hop_finished;
// then finished/failed/cancelled per `next_outcome`) WatchTask replays.
// ImportCard stores the bytes under "imported-N"; ExportCard streams a card's
// bytes in 64 KiB chunks. Unknown ids are NOT_FOUND.
//
// Thread safety: thread-safe (state behind a mutex); Update() may be called
// while qkvctl talks to the server.
#ifndef QKVSHARE_QKVCTL_TESTING_FAKE_DAEMON_H_
#define QKVSHARE_QKVCTL_TESTING_FAKE_DAEMON_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "qkvctl/testing/short_temp_dir.h"
#include "qkvshare/v1/admin.pb.h"
#include "qkvshare/v1/cards.pb.h"
#include "qkvshare/v1/catalog.pb.h"
#include "qkvshare/v1/tasks.pb.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace qkvshare::qkvctl::testing {

namespace v1 = ::qkvshare::v1;

class FakeDaemon {
 public:
  struct Card {
    v1::CardInfo info;
    std::string bytes;
  };
  struct State {
    v1::Status status;
    v1::Stats stats;
    v1::ListAgentsResponse agents;
    v1::ListWorkflowsResponse workflows;
    std::vector<std::string> reload_result;
    absl::Status reload_error;
    // Tasks newest first, and each task's event script.
    std::vector<v1::Task> tasks;
    std::map<std::string, std::vector<v1::TaskEvent>> events;
    // How the next submitted task ends, and an error SubmitTask returns.
    v1::TaskState next_outcome = v1::TASK_STATE_FINISHED;
    absl::Status submit_error;
    std::vector<v1::SubmitTaskRequest> submitted;
    std::vector<std::string> cancelled;  // CancelTask ids
    std::map<std::string, Card> cards;   // by id
    std::vector<std::string> deleted;
    int imported = 0;
  };

  // The canned state: 3 agents, workflows "story" (3 hops) and "pair" (2
  // hops), one finished task "t-000001", two cards ("c1": 300000 bytes of
  // pseudo-random data, "c2": child of c1).
  static State DefaultState();

  // Starts serving DefaultState() on /tmp/qkvctl-XXXXXX/qkvshared.sock.
  // Errors: Internal when the server cannot start.
  static absl::StatusOr<std::unique_ptr<FakeDaemon>> Start();
  ~FakeDaemon();

  // "unix:///tmp/qkvctl-XXXXXX/qkvshared.sock".
  std::string address() const { return "unix://" + socket_path_; }
  const std::string& socket_path() const { return socket_path_; }

  // Runs `f` on the state under the lock.
  void Update(const std::function<void(State&)>& f);
  State Snapshot() const;

  // Stops the server; later connections fail like a stopped daemon.
  void Shutdown();

 private:
  class Services;
  FakeDaemon();

  ShortTempDir dir_;
  std::string socket_path_;
  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Services> services_;
  std::unique_ptr<grpc::Server> server_;
};

// The events of a scripted task `id` running `agents` in order: each hop
// generates the words of `kFakeHopText` as tokens; hops after the first get a
// card handoff. `outcome` FAILED fails on the last hop, CANCELLED cancels
// there. Also fills `task` (state, hops, output).
std::vector<v1::TaskEvent> ScriptTask(const std::string& id, const std::vector<std::string>& agents,
                                      v1::TaskState outcome, v1::Task* task);
inline constexpr char kFakeHopText[] = "Once upon a time there was a cat.";

}  // namespace qkvshare::qkvctl::testing

#endif  // QKVSHARE_QKVCTL_TESTING_FAKE_DAEMON_H_

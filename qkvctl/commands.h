// File: qkvctl/commands.h
// -----------------------------------------------------------------------------
// qkvctl's commands, one function each, over a Session (connection, output
// mode and streams). Each returns the process exit code (qkvctl/exit_codes.h)
// and prints errors as ONE line on the error stream:
//   qkvctl: cannot connect to unix:///run/qkvshare/qkvshared.sock: no daemon is listening (...)
//   qkvctl: get t-9: unknown task t-9 (NOT_FOUND)
// Human output (aligned tables) by default; with json, proto3 JSON of the
// reply (JSON Lines of events for streams).
//
// Lifecycle: a Session connects on the first command that needs the daemon.
// Thread safety: thread-compatible.
#ifndef QKVSHARE_QKVCTL_COMMANDS_H_
#define QKVSHARE_QKVCTL_COMMANDS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>

#include "absl/status/statusor.h"
#include "qkvctl/client.h"

namespace qkvshare::qkvctl {

class Session {
 public:
  Session(Client::Options options, bool json, std::ostream& out, std::ostream& err)
      : options_(std::move(options)), json_(json), out_(out), err_(err) {}

  // The connected client (connects on first use). Errors: those of
  // Client::Connect.
  absl::StatusOr<Client*> client();

  // Sets *client to the connected client and returns 0, or prints the
  // connection error and returns its exit code. Usage:
  //   Client* client = nullptr;
  //   if (int rc = s.Connect("status", &client); rc != 0) return rc;
  int Connect(const std::string& what, Client** client);

  bool json() const { return json_; }
  std::ostream& out() { return out_; }
  std::ostream& err() { return err_; }

  // Prints the one-line error for `status` from the daemon while doing
  // `what` ("get t-9") and returns its exit code (ExitCodeForRpc). Connection
  // errors (UNAVAILABLE) print their own self-contained message.
  int Fail(const std::string& what, const absl::Status& status);
  // Prints "qkvctl: <message>" and returns kExitUsage (local problems: files,
  // arguments).
  int LocalError(const std::string& message);

 private:
  Client::Options options_;
  const bool json_;
  std::ostream& out_;
  std::ostream& err_;
  std::unique_ptr<Client> client_;
};

// status / agents / workflows / stats / reload.
int RunStatus(Session& s);
int RunAgents(Session& s);
int RunWorkflows(Session& s);
int RunStats(Session& s);
int RunReload(Session& s);

struct SubmitOptions {
  std::string workflow;
  std::optional<std::string> input;       // --input TEXT
  std::optional<std::string> input_file;  // --input-file F ("-": standard input)
  bool wait = false;
  std::optional<double> bits;         // --bits: handoff_override.bits
  std::string mode;                   // --mode card|full|reprefill ("": unset)
  std::string policy;                 // --policy adaptive|uniform ("": unset)
  std::optional<int> max_new_tokens;  // generation_override.max_new_tokens
  int64_t deadline_ms = 0;            // 0: none
  std::string label;
  std::string from_card;  // --from-card ID: context_card ("": none)
  bool keep = false;      // --keep: keep_context; waits and prints the kept card's id
};
// Submits; prints the task id (or, with wait, streams the task and ends with
// the per-hop table). Exit 1 when a waited-for task failed or was cancelled.
int RunSubmit(Session& s, const SubmitOptions& options);

struct WatchOptions {
  std::string task_id;
  int64_t from_seq = 0;
  bool skip_tokens = false;
};
// Follows a task to its end like submit --wait; exit 1 when it failed or was
// cancelled.
int RunWatch(Session& s, const WatchOptions& options);

int RunTasks(Session& s, int limit);
int RunGet(Session& s, const std::string& task_id);
int RunCancel(Session& s, const std::string& task_id);
// `resume ID --input TEXT [--wait]`: continues a PAUSED task; with `wait`,
// follows it like `submit --wait`.
int RunResume(Session& s, const std::string& task_id, const std::string& input, bool wait);
// `workflows NAME`: the graph (or line) of one workflow; --json: its WorkflowInfo.
int RunWorkflow(Session& s, const std::string& name);

}  // namespace qkvshare::qkvctl

#endif  // QKVSHARE_QKVCTL_COMMANDS_H_

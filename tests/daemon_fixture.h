// File: tests/daemon_fixture.h
// -----------------------------------------------------------------------------
// Test helper: runs a real `qkvshared` process on a private Unix socket with
// a generated daemon.yaml (the bundled stories260K model, unless the test
// adds models), and gives gRPC stubs to it. Each DaemonProcess uses its own
// socket directory under /tmp (sun_path is limited to 107 bytes) and its own
// shared-memory instance name.
//
// Thread safety: none; one test thread.
#ifndef QKVSHARE_TESTS_DAEMON_FIXTURE_H_
#define QKVSHARE_TESTS_DAEMON_FIXTURE_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "qkvshare/v1/admin.grpc.pb.h"
#include "qkvshare/v1/cards.grpc.pb.h"
#include "qkvshare/v1/catalog.grpc.pb.h"
#include "qkvshare/v1/tasks.grpc.pb.h"

namespace qkvshare::testing {

// Absolute path of a runfile given relative to the workspace root.
std::string Runfile(const std::string& path);

class DaemonProcess {
 public:
  // `config_yaml` is the body of daemon.yaml without `listen`/`instance`
  // (added here). `workflows` maps file names to YAML text, written into a
  // workflows_dir the config names. Waits until the daemon answers GetStatus
  // (up to 30 s). Errors: Internal with the daemon's log when it exits early.
  static absl::StatusOr<std::unique_ptr<DaemonProcess>> Start(
      const std::string& config_yaml,
      const std::vector<std::pair<std::string, std::string>>& workflows);
  ~DaemonProcess();

  // A daemon.yaml body hosting the bundled model as `stories` with agents
  // `writer`, `continuer` and `ender` (greedy, `max_new_tokens` each), and
  // the given limits block appended.
  static std::string StoriesConfig(int max_new_tokens, const std::string& extra = "");
  // A workflow file body: the 3-hop story (writer {input} -> continuer "The
  // next day," -> ender "In the end,") named `name`, with the workflow-level
  // `handoff` given as a YAML flow map, e.g. "{mode: card, bits: 4}".
  static std::string StoryWorkflow(const std::string& name, const std::string& handoff);

  const std::string& address() const { return address_; }
  const std::string& socket_path() const { return socket_path_; }
  const std::string& instance() const { return instance_; }
  // The daemon's workflows_dir (tests may add files and reload).
  std::string workflows_dir() const { return dir_ + "/workflows"; }
  pid_t pid() const { return pid_; }
  std::string Log() const;

  v1::TaskService::Stub& tasks() { return *tasks_; }
  v1::CatalogService::Stub& catalog() { return *catalog_; }
  v1::CardService::Stub& cards() { return *cards_; }
  v1::AdminService::Stub& admin() { return *admin_; }

  // Sends `sig` and waits for the process; returns its exit status
  // (WEXITSTATUS), or -1 if it did not exit normally within `timeout_s`.
  int SignalAndWait(int sig, int timeout_s = 60);

  // Submits and waits for the end; returns the final Task.
  absl::StatusOr<v1::Task> RunTask(const v1::SubmitTaskRequest& request);

 private:
  DaemonProcess() = default;
  std::string dir_, socket_path_, address_, instance_, log_path_;
  pid_t pid_ = -1;
  std::unique_ptr<v1::TaskService::Stub> tasks_;
  std::unique_ptr<v1::CatalogService::Stub> catalog_;
  std::unique_ptr<v1::CardService::Stub> cards_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
};

}  // namespace qkvshare::testing

#endif  // QKVSHARE_TESTS_DAEMON_FIXTURE_H_

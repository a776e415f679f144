// qkvshared: the qkvshare daemon. Parses flags, loads the configuration,
// starts ServerCore and the gRPC server, tells systemd it is ready, and
// handles signals: SIGHUP reloads workflows; SIGTERM/SIGINT drain (running
// tasks get shutdown_grace_seconds, the rest are cancelled) and exit 0.
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agents/compute_threads.h"
#include "base/logging.h"
#include "daemon/config/config.h"
#include "daemon/metrics.h"
#include "daemon/server.h"
#include "daemon/server_core.h"
#include "daemon/systemd_notify.h"
#include "daemon/version.h"

ABSL_FLAG(std::string, config, "/etc/qkvshare/daemon.yaml", "daemon configuration (YAML)");
ABSL_FLAG(std::string, listen, "", "override `listen` (a unix:/path address)");
ABSL_FLAG(std::string, instance, "", "override `instance` (names shared-memory segments)");
ABSL_FLAG(std::string, log_level, "", "override `log_level` (trace..off)");
ABSL_FLAG(bool, check_config, false, "validate the configuration and workflows, then exit");
ABSL_FLAG(bool, version, false, "print the version and exit");

namespace qkvshare::daemon {
namespace {

// SIGTERM, SIGINT and SIGHUP: taken synchronously by the main thread
// (sigtimedwait), blocked everywhere else.
sigset_t DaemonSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  return signals;
}

int Fail(const absl::Status& s) {
  spdlog::critical("{}", std::string(s.message()));
  SystemdNotifier::Status(absl::StrCat("failed: ", s.message()));
  return 1;
}

int Main() {
  absl::StatusOr<DaemonConfig> config = LoadDaemonConfig(absl::GetFlag(FLAGS_config));
  const std::string level = !absl::GetFlag(FLAGS_log_level).empty() ? absl::GetFlag(FLAGS_log_level)
                            : config.ok()                           ? config->log_level
                                                                    : "";
  if (absl::Status s = InitLogging(level, SystemdNotifier::Enabled()); !s.ok()) {
    spdlog::warn("{}", std::string(s.message()));
  }
  if (!config.ok()) return Fail(config.status());
  if (!absl::GetFlag(FLAGS_listen).empty()) config->listen = absl::GetFlag(FLAGS_listen);
  if (!absl::GetFlag(FLAGS_instance).empty()) config->instance = absl::GetFlag(FLAGS_instance);
  if (absl::Status dirs = CheckModelDirectories(*config); !dirs.ok()) return Fail(dirs);
  if (absl::GetFlag(FLAGS_check_config)) {
    absl::StatusOr<std::vector<WorkflowConfig>> wfs =
        LoadWorkflowDir(config->workflows_dir, *config);
    if (!wfs.ok()) return Fail(wfs.status());
    std::cout << config->file << ": OK (" << config->models.size() << " model(s), "
              << config->agents.size() << " agent(s), " << wfs->size() << " workflow(s))\n";
    return 0;
  }

  const sigset_t signals = DaemonSignals();
  signal(SIGPIPE, SIG_IGN);

  spdlog::info("qkvshared {} starting: config {}", kVersion, config->file);
  const absl::Duration grace = absl::Seconds(config->shutdown_grace_seconds);
  absl::StatusOr<std::unique_ptr<ServerCore>> core = ServerCore::Create(*config);
  if (!core.ok()) return Fail(core.status());
  Server::Options so;
  so.listen = config->listen;
  so.tcp_listen = config->tcp_listen;
  so.tcp_security = {config->tcp_auth_token_file, config->tcp_tls_cert_file,
                     config->tcp_tls_key_file};
  so.max_message_bytes = config->limits.max_message_bytes;
  so.max_rpc_threads = config->limits.max_rpc_threads;
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(core->get(), so);
  if (!server.ok()) return Fail(server.status());
  std::unique_ptr<MetricsServer> metrics;  // destroyed before the core
  if (!config->metrics_listen.empty()) {
    ServerCore* c = core->get();
    absl::StatusOr<std::unique_ptr<MetricsServer>> m =
        MetricsServer::Start(config->metrics_listen, &c->stats(), [c] {
          const v1::Status s = c->GetStatus();
          MetricsGauges g;
          g.queued_tasks = s.queued_tasks();
          g.running_tasks = s.running_tasks();
          g.agents = s.agents();
          g.agents_busy = s.agents_busy();
          g.store_bytes = s.store_bytes();
          g.store_quota_bytes = s.store_quota_bytes();
          g.store_cards = s.store_cards();
          g.uptime_seconds = s.uptime_ms() / 1000.0;
          return g;
        });
    if (!m.ok()) return Fail(m.status());
    metrics = std::move(*m);
    spdlog::info("metrics on http://{}/metrics", metrics->address());
  }
  const std::string ready =
      absl::StrCat("serving on ", config->listen, " (", (*core)->ListAgents().size(), " agents)");
  SystemdNotifier::Ready(ready);
  spdlog::info("ready: {}", ready);

  const absl::Duration watchdog = SystemdNotifier::WatchdogInterval();
  const absl::Duration tick = watchdog > absl::ZeroDuration() ? watchdog : absl::Seconds(5);
  while (true) {
    timespec timeout = absl::ToTimespec(tick);
    int sig = sigtimedwait(&signals, nullptr, &timeout);
    if (watchdog > absl::ZeroDuration()) SystemdNotifier::Watchdog();
    if (sig == SIGHUP) {
      SystemdNotifier::Reloading();
      absl::StatusOr<std::vector<std::string>> names = (*core)->ReloadWorkflows();
      SystemdNotifier::Ready(names.ok() ? ready : absl::StrCat(ready, "; last reload failed"));
    } else if (sig == SIGTERM || sig == SIGINT) {
      spdlog::info("{}: draining (grace {})", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                   absl::FormatDuration(grace));
      SystemdNotifier::Stopping();
      (*server)->SetServing(false);
      // Keep the watchdog fed while tasks drain.
      std::atomic<bool> drained{false};
      std::thread drain([&] {
        (*core)->Shutdown(grace);
        drained = true;
      });
      while (!drained) {
        if (watchdog > absl::ZeroDuration()) SystemdNotifier::Watchdog();
        // Further signals while draining are taken here and ignored.
        timespec poll = absl::ToTimespec(absl::Milliseconds(100));
        const int again = sigtimedwait(&signals, nullptr, &poll);
        if (again > 0) {
          spdlog::warn("{}: already draining (grace {}), ignored", strsignal(again),
                       absl::FormatDuration(grace));
        }
      }
      drain.join();
      (*server)->Stop(absl::Milliseconds(500));
      metrics.reset();
      spdlog::info("stopped");
      return 0;
    }
  }
}

}  // namespace
}  // namespace qkvshare::daemon

int main(int argc, char** argv) {
  // Block the daemon's signals before anything can start a thread (libraries
  // do at load or first use): every thread inherits the mask, so a signal is
  // only ever taken by the main loop's sigtimedwait, never by the default
  // action in some other thread. The mask survives the re-exec.
  const sigset_t signals = qkvshare::daemon::DaemonSignals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  qkvshare::agents::ReexecWithShortOpenMpSpin(argv);
  // --help lists this file's flags (absl matches files named after the binary).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view f) {
    return absl::EndsWith(f, "daemon/main.cc");
  };
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "qkvshared --config FILE [--listen unix:///path.sock] [--check_config]\n"
      "The qkvshare daemon: hosts LLM agents and hands KV caches between them as CacheCards.");
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_version)) {
    std::printf("qkvshared %s\n", qkvshare::kVersion);
    return 0;
  }
  return qkvshare::daemon::Main();
}

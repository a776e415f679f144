// libFuzzer target for the YAML configuration loader (scripts/fuzz.sh
// config_fuzzer): daemon.yaml (ParseDaemonConfig) and workflow files
// (ParseWorkflow) from arbitrary text. Seeds: configs/daemon.yaml and
// configs/workflows/*.yaml.
//
// Invariants (abort on violation): parsing never throws or crashes; an error
// is InvalidArgument or NotFound with a message naming the file; a daemon
// config that parses has at least the documented bounds (limits positive,
// hop counts within kMaxHops); a workflow that parses has 1..kMaxHops hops,
// each naming an agent of the daemon config.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "daemon/config/config.h"

namespace qkvshare::daemon {
namespace {

void Check(bool ok, const char* what, const absl::Status& s = absl::OkStatus()) {
  if (!ok) {
    std::fprintf(stderr, "invariant violated: %s (%s)\n", what, s.ToString().c_str());
    std::abort();
  }
}

void CheckError(const absl::Status& s, const std::string& file) {
  Check(s.code() == absl::StatusCode::kInvalidArgument || s.code() == absl::StatusCode::kNotFound,
        "config error code", s);
  Check(absl::StrContains(s.message(), file), "config error names the file", s);
}

// A valid daemon config the workflow half resolves agent names against.
const DaemonConfig& BaseConfig() {
  static const DaemonConfig* config = [] {
    absl::StatusOr<DaemonConfig> c = ParseDaemonConfig(
        "models:\n  m:\n    path: /nonexistent/model\n"
        "agents:\n  a:\n    model: m\n  b:\n    model: m\n",
        "/fuzz/base.yaml");
    Check(c.ok(), "base config parses", c.status());
    return new DaemonConfig(*std::move(c));
  }();
  return *config;
}

}  // namespace
}  // namespace qkvshare::daemon

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qkvshare::daemon;  // NOLINT
  const std::string text(reinterpret_cast<const char*>(data), size);

  const std::string daemon_file = "/fuzz/daemon.yaml";
  absl::StatusOr<DaemonConfig> config = ParseDaemonConfig(text, daemon_file);
  if (config.ok()) {
    Check(config->limits.max_concurrent_tasks > 0, "max_concurrent_tasks > 0");
    Check(config->limits.max_input_bytes > 0, "max_input_bytes > 0");
    Check(config->limits.max_card_bytes > 0, "max_card_bytes > 0");
    for (const AgentEntry& a : config->agents) {
      Check(config->FindModel(a.model) != nullptr, "agent names a known model");
    }
  } else {
    CheckError(config.status(), daemon_file);
  }

  const std::string workflow_file = "/fuzz/workflows/w.yaml";
  absl::StatusOr<WorkflowConfig> workflow = ParseWorkflow(text, workflow_file, BaseConfig());
  if (workflow.ok()) {
    Check(!workflow->hops.empty() && static_cast<int>(workflow->hops.size()) <= kMaxHops,
          "workflow hop count");
    for (const HopConfig& h : workflow->hops) {
      Check(BaseConfig().FindAgent(h.agent) != nullptr, "hop names a known agent");
    }
  } else {
    CheckError(workflow.status(), workflow_file);
  }
  return 0;
}

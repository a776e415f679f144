#include "qkvctl/cli.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "daemon/version.h"
#include "qkvctl/card_commands.h"
#include "qkvctl/client.h"
#include "qkvctl/commands.h"
#include "qkvctl/connection.h"
#include "qkvctl/exit_codes.h"

namespace qkvshare::qkvctl {

namespace {

constexpr char kDescription[] =
    "qkvctl: control a running qkvshared daemon (tasks, agents, workflows, CacheCards).";

std::string Footer() {
  return absl::StrCat("\nEnvironment:\n  ", kAddressEnv,
                      "  daemon address when --addr is not given (default ", kDefaultAddress,
                      ")\n  ", kTokenEnv, "  bearer token for a TCP listener (else --token_file / ",
                      kTokenFileEnv, ")\n  ", kTlsCaFileEnv, "  as --tls_ca_file\n\n",
                      ExitCodeHelp());
}

// The token (--token_file, else $QKVSHARE_TOKEN) and TLS CA file into
// `options`. Errors: InvalidArgument naming the file that cannot be read.
absl::Status ReadCredentials(const std::string& token_file, const std::string& tls_ca_file,
                             Client::Options* options) {
  auto read = [](const std::string& path, std::string* out) {
    std::ifstream in(path);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
    std::ostringstream text;
    text << in.rdbuf();
    *out = text.str();
    return absl::OkStatus();
  };
  if (!token_file.empty()) {
    QKV_RETURN_IF_ERROR(read(token_file, &options->token));
  } else if (const char* env = std::getenv(kTokenEnv); env != nullptr) {
    options->token = env;
  }
  options->token = std::string(absl::StripAsciiWhitespace(options->token));
  if (!tls_ca_file.empty()) QKV_RETURN_IF_ERROR(read(tls_ca_file, &options->tls_ca_pem));
  return absl::OkStatus();
}

}  // namespace

int RunQkvctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  // CLI11's PositiveNumber / NonNegativeNumber print "not in range 0.000000
  // to 1.79769e+308" (and the max in full); say what is wanted instead.
  const CLI::Validator kPositive(
      [](std::string& v) -> std::string {
        double d;
        if (absl::SimpleAtod(v, &d) && d > 0) return "";
        return absl::StrCat("must be a number > 0, got '", v, "'");
      },
      "> 0");
  const CLI::Validator kNonNegative(
      [](std::string& v) -> std::string {
        double d;
        if (absl::SimpleAtod(v, &d) && d >= 0) return "";
        return absl::StrCat("must be a number >= 0, got '", v, "'");
      },
      ">= 0");

  CLI::App app(kDescription, "qkvctl");
  app.footer(Footer());
  app.require_subcommand(1);
  app.fallthrough();  // global options may follow the subcommand
  app.set_version_flag("--version", absl::StrCat("qkvctl ", kVersion));

  std::string addr;
  bool json = false;
  double timeout_s = 30;
  app.add_option("--addr", addr, "Daemon address: unix:///path.sock, /path.sock or host:port")
      ->envname(kAddressEnv);
  std::string token_file, tls_ca_file;
  app.add_option("--token_file", token_file,
                 "File holding the bearer token of a TCP listener (tcp_auth_token_file)")
      ->envname(kTokenFileEnv);
  app.add_option("--tls_ca_file", tls_ca_file, "PEM CA certificates of a TLS TCP listener")
      ->envname(kTlsCaFileEnv);
  app.add_flag("--json", json, "Print machine-readable JSON (JSON Lines for task streams)");
  app.add_option("--timeout", timeout_s, "Deadline of each request, seconds")->check(kPositive);

  CLI::App* status = app.add_subcommand("status", "Daemon version, uptime, agents, queue, store");
  CLI::App* agents = app.add_subcommand("agents", "List the hosted agents");
  std::string workflow_name;
  CLI::App* workflows =
      app.add_subcommand("workflows", "List the workflows, or show one's steps, edges and bounds");
  workflows->add_option("name", workflow_name, "Workflow to show as a graph");

  SubmitOptions submit_opts;
  std::string input, input_file, mode, policy;
  double bits = 0;
  int max_new_tokens = 0;
  CLI::App* submit = app.add_subcommand("submit", "Submit a task running WORKFLOW");
  submit->add_option("workflow", submit_opts.workflow, "Workflow name (qkvctl workflows)")
      ->required();
  CLI::Option* input_opt = submit->add_option("--input", input, "Task input text");
  CLI::Option* input_file_opt =
      submit->add_option("--input-file", input_file, "Read the input from FILE ('-': stdin)");
  input_opt->excludes(input_file_opt);
  submit->add_flag("--wait", submit_opts.wait,
                   "Stream the task's tokens and per-hop progress until it ends");
  CLI::Option* bits_opt =
      submit->add_option("--bits", bits, "Handoff bits per element (2..8, or 16) for every hop");
  submit->add_option("--mode", mode, "Handoff mode for every hop")
      ->check(CLI::IsMember({"card", "full", "reprefill"}));
  submit->add_option("--policy", policy, "Bit allocation policy for every hop")
      ->check(CLI::IsMember({"adaptive", "uniform"}));
  CLI::Option* max_new_opt =
      submit->add_option("--max-new-tokens", max_new_tokens, "Tokens to generate per hop")
          ->check(kPositive);
  submit->add_option("--deadline-ms", submit_opts.deadline_ms, "Fail the task after N ms")
      ->check(kNonNegative);
  submit->add_option("--label", submit_opts.label, "Free-form label shown in listings");
  submit->add_option("--from-card", submit_opts.from_card,
                     "Start from stored card ID (imported or kept): no re-prefill");
  submit->add_flag("--keep", submit_opts.keep,
                   "Keep the final context as a pinned card and print its id (implies --wait)");

  WatchOptions watch_opts;
  CLI::App* watch = app.add_subcommand("watch", "Follow a task until it ends");
  watch->add_option("task", watch_opts.task_id, "Task id")->required();
  watch->add_option("--from-seq", watch_opts.from_seq, "First event to show (0: from the start)")
      ->check(kNonNegative);
  watch->add_flag("--no-tokens", watch_opts.skip_tokens, "Leave out the generated tokens");

  int limit = 0;
  CLI::App* tasks = app.add_subcommand("tasks", "List queued, running and recent tasks");
  tasks->add_option("--limit", limit, "At most N tasks, newest first (0: all kept)")
      ->check(kNonNegative);

  std::string task_id;
  CLI::App* get = app.add_subcommand("get", "Show a task: state, per-hop statistics, output");
  get->add_option("task", task_id, "Task id")->required();
  std::string resume_input;
  bool resume_wait = false;
  CLI::App* resume = app.add_subcommand("resume", "Continue a PAUSED task with new input");
  resume->add_option("task", task_id, "Task id")->required();
  resume->add_option("--input", resume_input, "The text the task continues with ({input})")
      ->required();
  resume->add_flag("--wait", resume_wait, "Follow the task until it ends or pauses again");
  CLI::App* cancel = app.add_subcommand("cancel", "Cancel a queued, running or paused task");
  cancel->add_option("task", task_id, "Task id")->required();

  CLI::App* cards = app.add_subcommand("cards", "CacheCards in the daemon's store");
  cards->require_subcommand(1);
  std::string card_id, card_file;
  CLI::App* cards_ls = cards->add_subcommand("ls", "List the cards in the store");
  CLI::App* cards_inspect = cards->add_subcommand(
      "inspect", "Header, fingerprint, tokens, per-layer bytes and bit histogram of a card");
  cards_inspect->add_option("card", card_id, "Card id, or a .qkvcard file")->required();
  CLI::App* cards_export = cards->add_subcommand("export", "Write a card to a .qkvcard file");
  cards_export->add_option("id", card_id, "Card id")->required();
  cards_export->add_option("-o,--output", card_file, "Output file")->required();
  CLI::App* cards_import = cards->add_subcommand("import", "Add a .qkvcard file to the store");
  cards_import->add_option("file", card_file, ".qkvcard file")
      ->required()
      ->check(CLI::ExistingFile);
  CLI::App* cards_rm = cards->add_subcommand("rm", "Remove a card from the store");
  cards_rm->add_option("id", card_id, "Card id")->required();

  CLI::App* stats = app.add_subcommand("stats", "Counters and latency summaries");
  CLI::App* reload = app.add_subcommand("reload", "Re-read the workflow files (all-or-nothing)");

  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e, out, err);
    return code == 0 ? kExitOk : kExitUsage;
  }

  Client::Options options;
  options.address = ResolveAddress(addr, "");
  options.rpc_timeout = absl::Seconds(timeout_s);
  if (absl::Status s = ReadCredentials(token_file, tls_ca_file, &options); !s.ok()) {
    err << "qkvctl: " << s.message() << "\n";
    return kExitUsage;
  }
  Session session(options, json, out, err);

  if (*submit) {
    if (*input_opt) submit_opts.input = input;
    if (*input_file_opt) submit_opts.input_file = input_file;
    if (*bits_opt) submit_opts.bits = bits;
    if (*max_new_opt) submit_opts.max_new_tokens = max_new_tokens;
    submit_opts.mode = mode;
    submit_opts.policy = policy;
    return RunSubmit(session, submit_opts);
  }
  if (*status) return RunStatus(session);
  if (*agents) return RunAgents(session);
  if (*workflows) {
    return workflow_name.empty() ? RunWorkflows(session) : RunWorkflow(session, workflow_name);
  }
  if (*resume) return RunResume(session, task_id, resume_input, resume_wait);
  if (*watch) return RunWatch(session, watch_opts);
  if (*tasks) return RunTasks(session, limit);
  if (*get) return RunGet(session, task_id);
  if (*cancel) return RunCancel(session, task_id);
  if (*cards_ls) return RunCardsList(session);
  if (*cards_inspect) return RunCardsInspect(session, card_id);
  if (*cards_export) return RunCardsExport(session, card_id, card_file);
  if (*cards_import) return RunCardsImport(session, card_file);
  if (*cards_rm) return RunCardsRemove(session, card_id);
  if (*stats) return RunStats(session);
  if (*reload) return RunReload(session);
  return session.LocalError("no command given (see qkvctl --help)");
}

}  // namespace qkvshare::qkvctl

#include "qkvctl/commands.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "agents/tokenizer/utf8.h"
#include "qkvctl/exit_codes.h"
#include "qkvctl/format.h"
#include "qkvctl/task_progress.h"

namespace qkvshare::qkvctl {

namespace {

// Reads all of `path` ("-": standard input).
absl::StatusOr<std::string> ReadInputFile(const std::string& path) {
  if (path == "-") {
    return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return text.str();
}

bool ParseMode(const std::string& name, v1::HandoffMode* mode) {
  if (name == "card")
    *mode = v1::HANDOFF_MODE_CARD;
  else if (name == "full")
    *mode = v1::HANDOFF_MODE_FULL;
  else if (name == "reprefill")
    *mode = v1::HANDOFF_MODE_REPREFILL;
  else
    return false;
  return true;
}

bool ParsePolicy(const std::string& name, v1::BitPolicy* policy) {
  if (name == "adaptive")
    *policy = v1::BIT_POLICY_ADAPTIVE;
  else if (name == "uniform")
    *policy = v1::BIT_POLICY_UNIFORM;
  else
    return false;
  return true;
}

// Streams task `id` from `from_seq` to its end; prints the per-hop table in
// human mode. Exit 0 (finished), 1 (failed/cancelled) or the error's code.
int FollowTask(Session& s, Client* client, const std::string& id, int64_t from_seq,
               bool skip_tokens) {
  TaskProgress progress(s.out(), s.json());
  v1::WatchTaskRequest request;
  request.set_task_id(id);
  request.set_from_seq(from_seq);
  request.set_skip_tokens(skip_tokens);
  while (true) {
    absl::Status st = client->WatchTask(request, [&](const v1::TaskEvent& e) {
      progress.OnEvent(e);
      return !progress.paused();  // a paused task waits for `qkvctl resume`
    });
    if (!st.ok()) return s.Fail(absl::StrCat("watch ", id), st);
    if (!progress.paused()) break;
    // Stopped at a pause: done if the task still waits, else (a replayed
    // pause that was resumed since) follow on.
    absl::StatusOr<v1::Task> task = client->GetTask(id);
    if (!task.ok()) return s.Fail(absl::StrCat("get ", id), task.status());
    if (task->state() == v1::TASK_STATE_PAUSED) break;
    request.set_from_seq(progress.next_seq());
  }
  v1::TaskState state = progress.final_state();
  std::vector<v1::HopResult> hops = progress.hops();
  if (progress.paused()) {
    state = v1::TASK_STATE_PAUSED;
  } else if (!progress.ended() || (from_seq > 0 && !s.json())) {
    // The stream ended early, or started mid-task: the task record is complete.
    absl::StatusOr<v1::Task> task = client->GetTask(id);
    if (!task.ok()) return s.Fail(absl::StrCat("get ", id), task.status());
    state = task->state();
    hops.assign(task->hops().begin(), task->hops().end());
  }
  if (!s.json() && !hops.empty()) s.out() << "\n" << FormatHopTable(hops);
  switch (state) {
    case v1::TASK_STATE_FINISHED:
    case v1::TASK_STATE_PAUSED:
      return kExitOk;
    case v1::TASK_STATE_FAILED:
    case v1::TASK_STATE_CANCELLED:
      return kExitTaskFailed;
    default:
      return s.Fail(absl::StrCat("watch ", id),
                    absl::InternalError(absl::StrCat("the event stream ended while the task is ",
                                                     TaskStateName(state))));
  }
}

}  // namespace

absl::StatusOr<Client*> Session::client() {
  if (client_ == nullptr) {
    absl::StatusOr<std::unique_ptr<Client>> c = Client::Connect(options_);
    if (!c.ok()) return c.status();
    client_ = *std::move(c);
  }
  return client_.get();
}

int Session::Connect(const std::string& what, Client** client) {
  absl::StatusOr<Client*> c = this->client();
  if (!c.ok()) return Fail(what, c.status());
  *client = *c;
  return kExitOk;
}

int Session::Fail(const std::string& what, const absl::Status& status) {
  if (status.code() == absl::StatusCode::kUnavailable) {
    err_ << "qkvctl: " << status.message() << "\n";
  } else {
    err_ << "qkvctl: " << what << ": " << status.message() << " ("
         << absl::StatusCodeToString(status.code()) << ")\n";
  }
  return ExitCodeForRpc(status);
}

int Session::LocalError(const std::string& message) {
  err_ << "qkvctl: " << message << "\n";
  return kExitUsage;
}

int RunStatus(Session& s) {
  Client* client = nullptr;
  if (int rc = s.Connect("status", &client); rc != kExitOk) return rc;
  absl::StatusOr<v1::Status> r = client->GetStatus();
  if (!r.ok()) return s.Fail("status", r.status());
  s.out() << (s.json() ? MessageJson(*r) : FormatStatus(*r));
  return kExitOk;
}

int RunAgents(Session& s) {
  Client* client = nullptr;
  if (int rc = s.Connect("agents", &client); rc != kExitOk) return rc;
  absl::StatusOr<v1::ListAgentsResponse> r = client->ListAgents();
  if (!r.ok()) return s.Fail("agents", r.status());
  s.out() << (s.json() ? MessageJson(*r) : FormatAgents(*r));
  return kExitOk;
}

int RunWorkflows(Session& s) {
  Client* client = nullptr;
  if (int rc = s.Connect("workflows", &client); rc != kExitOk) return rc;
  absl::StatusOr<v1::ListWorkflowsResponse> r = client->ListWorkflows();
  if (!r.ok()) return s.Fail("workflows", r.status());
  s.out() << (s.json() ? MessageJson(*r) : FormatWorkflows(*r));
  return kExitOk;
}

int RunWorkflow(Session& s, const std::string& name) {
  Client* client = nullptr;
  if (int rc = s.Connect("workflows", &client); rc != kExitOk) return rc;
  absl::StatusOr<v1::ListWorkflowsResponse> r = client->ListWorkflows();
  if (!r.ok()) return s.Fail("workflows", r.status());
  for (const v1::WorkflowInfo& w : r->workflows()) {
    if (w.name() != name) continue;
    s.out() << (s.json() ? MessageJson(w) : FormatWorkflowGraph(w));
    return kExitOk;
  }
  return s.Fail(absl::StrCat("workflows ", name),
                absl::NotFoundError(absl::StrCat("no workflow '", name, "'")));
}

int RunStats(Session& s) {
  Client* client = nullptr;
  if (int rc = s.Connect("stats", &client); rc != kExitOk) return rc;
  absl::StatusOr<v1::Stats> r = client->GetStats();
  if (!r.ok()) return s.Fail("stats", r.status());
  s.out() << (s.json() ? MessageJson(*r) : FormatStats(*r));
  return kExitOk;
}

int RunReload(Session& s) {
  Client* client = nullptr;
  if (int rc = s.Connect("reload", &client); rc != kExitOk) return rc;
  absl::StatusOr<v1::ReloadWorkflowsResponse> r = client->ReloadWorkflows();
  if (!r.ok()) return s.Fail("reload", r.status());
  if (s.json()) {
    s.out() << MessageJson(*r);
  } else {
    s.out() << "reloaded " << r->workflows_size()
            << " workflows: " << absl::StrJoin(r->workflows(), ", ") << "\n";
  }
  return kExitOk;
}

int RunSubmit(Session& s, const SubmitOptions& o) {
  v1::SubmitTaskRequest request;
  request.set_workflow(o.workflow);
  if (o.input.has_value() == o.input_file.has_value()) {
    return s.LocalError("submit: give exactly one of --input TEXT or --input-file FILE");
  }
  if (o.input) {
    request.set_input(*o.input);
  } else {
    absl::StatusOr<std::string> text = ReadInputFile(*o.input_file);
    if (!text.ok()) return s.LocalError(absl::StrCat("submit: ", text.status().message()));
    request.set_input(*std::move(text));
  }
  // The API's input is a proto3 string: invalid UTF-8 would fail in the
  // serializer with an empty INTERNAL error, so say what and where here.
  if (const size_t bad = agents::tokenizer_internal::FindInvalidUtf8(request.input());
      bad != std::string_view::npos) {
    return s.LocalError(
        absl::StrCat("submit: the input is not valid UTF-8 (byte offset ", bad, ")"));
  }
  v1::Handoff* handoff = request.mutable_handoff_override();
  if (!o.mode.empty()) {
    v1::HandoffMode mode;
    if (!ParseMode(o.mode, &mode)) {
      return s.LocalError(absl::StrCat("submit: --mode ", o.mode, ": use card, full or reprefill"));
    }
    handoff->set_mode(mode);
  }
  if (!o.policy.empty()) {
    v1::BitPolicy policy;
    if (!ParsePolicy(o.policy, &policy)) {
      return s.LocalError(absl::StrCat("submit: --policy ", o.policy, ": use adaptive or uniform"));
    }
    handoff->set_policy(policy);
  }
  if (o.bits) handoff->set_bits(*o.bits);
  if (o.max_new_tokens)
    request.mutable_generation_override()->set_max_new_tokens(*o.max_new_tokens);
  request.set_deadline_ms(o.deadline_ms);
  request.set_label(o.label);
  request.set_context_card(o.from_card);
  request.set_keep_context(o.keep);

  Client* client = nullptr;
  if (int rc = s.Connect("submit", &client); rc != kExitOk) return rc;
  absl::StatusOr<v1::SubmitTaskResponse> r = client->SubmitTask(request);
  if (!r.ok()) return s.Fail(absl::StrCat("submit ", o.workflow), r.status());
  if (!o.wait && !o.keep) {
    s.out() << (s.json() ? MessageJson(*r) : r->task_id() + "\n");
    return kExitOk;
  }
  if (!s.json()) s.out() << "task " << r->task_id() << "\n";
  const int rc = FollowTask(s, client, r->task_id(), 0, /*skip_tokens=*/false);
  if (rc != kExitOk || !o.keep || s.json()) return rc;  // JSON: the last hop_finished has kept_card
  absl::StatusOr<v1::Task> task = client->GetTask(r->task_id());
  if (!task.ok()) return s.Fail(absl::StrCat("get ", r->task_id()), task.status());
  s.out() << "kept card " << task->kept_card() << "\n";
  return kExitOk;
}

int RunWatch(Session& s, const WatchOptions& o) {
  Client* client = nullptr;
  if (int rc = s.Connect("watch", &client); rc != kExitOk) return rc;
  return FollowTask(s, client, o.task_id, o.from_seq, o.skip_tokens);
}

int RunTasks(Session& s, int limit) {
  Client* client = nullptr;
  if (int rc = s.Connect("tasks", &client); rc != kExitOk) return rc;
  absl::StatusOr<v1::ListTasksResponse> r = client->ListTasks(limit);
  if (!r.ok()) return s.Fail("tasks", r.status());
  s.out() << (s.json() ? MessageJson(*r) : FormatTasks(*r, absl::ToUnixMillis(absl::Now())));
  return kExitOk;
}

int RunGet(Session& s, const std::string& task_id) {
  Client* client = nullptr;
  if (int rc = s.Connect("get", &client); rc != kExitOk) return rc;
  absl::StatusOr<v1::Task> r = client->GetTask(task_id);
  if (!r.ok()) return s.Fail(absl::StrCat("get ", task_id), r.status());
  s.out() << (s.json() ? MessageJson(*r) : FormatTask(*r));
  return kExitOk;
}

int RunResume(Session& s, const std::string& task_id, const std::string& input, bool wait) {
  Client* client = nullptr;
  if (int rc = s.Connect("resume", &client); rc != kExitOk) return rc;
  absl::StatusOr<v1::Task> r = client->ResumeTask(task_id, input);
  if (!r.ok()) return s.Fail(absl::StrCat("resume ", task_id), r.status());
  if (wait) return FollowTask(s, client, task_id, r->num_events(), /*skip_tokens=*/false);
  s.out() << (s.json() ? MessageJson(*r) : absl::StrCat("task ", task_id, " resumed\n"));
  return kExitOk;
}

int RunCancel(Session& s, const std::string& task_id) {
  Client* client = nullptr;
  if (int rc = s.Connect("cancel", &client); rc != kExitOk) return rc;
  absl::StatusOr<v1::Task> r = client->CancelTask(task_id);
  if (!r.ok()) return s.Fail(absl::StrCat("cancel ", task_id), r.status());
  if (s.json()) {
    s.out() << MessageJson(*r);
  } else if (r->state() == v1::TASK_STATE_CANCELLED) {
    s.out() << "task " << task_id << " cancelled\n";
  } else {
    s.out() << "task " << task_id << " is " << TaskStateName(r->state())
            << (r->state() == v1::TASK_STATE_FINISHED || r->state() == v1::TASK_STATE_FAILED
                    ? " (already ended; nothing to cancel)"
                    : " (cancellation requested)")
            << "\n";
  }
  return kExitOk;
}

}  // namespace qkvshare::qkvctl

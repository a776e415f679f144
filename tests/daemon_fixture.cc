#include "tests/daemon_fixture.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace qkvshare::testing {

std::string Runfile(const std::string& path) {
  return std::filesystem::absolute(path).lexically_normal().string();
}

std::string DaemonProcess::StoryWorkflow(const std::string& name, const std::string& handoff) {
  return absl::StrCat("name: ", name, "\nhandoff: ", handoff, R"(
hops:
  - agent: writer
    instruction: "{input}"
  - agent: continuer
    instruction: "The next day,"
  - agent: ender
    instruction: "In the end,"
)");
}

std::string DaemonProcess::StoriesConfig(int max_new_tokens, const std::string& extra) {
  return absl::StrCat(R"(
log_level: info
shutdown_grace_seconds: 20
models:
  stories: {path: )",
                      Runfile("models/stories260K"), R"(, dtype: f32, threads: 1}
agents:
  writer: {model: stories, generation: {max_new_tokens: )",
                      max_new_tokens, R"(}}
  continuer: {model: stories, generation: {max_new_tokens: )",
                      max_new_tokens, R"(}}
  ender: {model: stories, generation: {max_new_tokens: )",
                      max_new_tokens, R"(}}
)",
                      extra);
}

absl::StatusOr<std::unique_ptr<DaemonProcess>> DaemonProcess::Start(
    const std::string& config_yaml,
    const std::vector<std::pair<std::string, std::string>>& workflows) {
  std::unique_ptr<DaemonProcess> d(new DaemonProcess());
  char tmpl[] = "/tmp/qkvtest.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
  d->dir_ = tmpl;
  d->socket_path_ = d->dir_ + "/q.sock";
  d->address_ = "unix://" + d->socket_path_;
  d->instance_ = absl::StrCat("test", getpid(), "_", d->dir_.substr(d->dir_.size() - 6));
  d->log_path_ = d->dir_ + "/qkvshared.log";
  std::filesystem::create_directories(d->dir_ + "/workflows");
  for (const auto& [name, text] : workflows) {
    std::ofstream(d->dir_ + "/workflows/" + name) << text;
  }
  const std::string config = d->dir_ + "/daemon.yaml";
  std::ofstream(config) << "listen: " << d->address_ << "\ninstance: " << d->instance_
                        << "\nworkflows_dir: workflows\n"
                        << config_yaml;
  const std::string binary = Runfile("daemon/qkvshared");
  const int log_fd = open(d->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::InternalError("cannot create " + d->log_path_);
  d->pid_ = fork();
  if (d->pid_ == 0) {  // only async-signal-safe calls until exec
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    execl(binary.c_str(), binary.c_str(), "--config", config.c_str(), nullptr);
    _exit(127);
  }
  close(log_fd);
  // Connect only once the socket exists (a failed first connect would put the
  // channel into reconnect backoff), and reconnect quickly.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (access(d->socket_path_.c_str(), F_OK) != 0 && absl::Now() < give_up) {
    int status = 0;
    if (waitpid(d->pid_, &status, WNOHANG) == d->pid_) {
      d->pid_ = -1;
      return absl::InternalError(
          absl::StrCat("qkvshared exited (status ", status, ") during start-up:\n", d->Log()));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  auto channel = grpc::CreateCustomChannel(d->address_, grpc::InsecureChannelCredentials(), args);
  d->tasks_ = v1::TaskService::NewStub(channel);
  d->catalog_ = v1::CatalogService::NewStub(channel);
  d->cards_ = v1::CardService::NewStub(channel);
  d->admin_ = v1::AdminService::NewStub(channel);
  while (absl::Now() < give_up) {
    int status = 0;
    if (waitpid(d->pid_, &status, WNOHANG) == d->pid_) {
      d->pid_ = -1;
      return absl::InternalError(
          absl::StrCat("qkvshared exited (status ", status, ") during start-up:\n", d->Log()));
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    v1::Status st;
    if (d->admin_->GetStatus(&ctx, v1::GetStatusRequest(), &st).ok()) return d;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat("qkvshared did not answer:\n", d->Log()));
}

DaemonProcess::~DaemonProcess() {
  // SIGTERM first, so the daemon removes its shared-memory segments.
  if (pid_ > 0) SignalAndWait(SIGTERM, 30);
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string DaemonProcess::Log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int DaemonProcess::SignalAndWait(int sig, int timeout_s) {
  if (pid_ <= 0) return -1;
  kill(pid_, sig);
  const absl::Time give_up = absl::Now() + absl::Seconds(timeout_s);
  int status = 0;
  while (absl::Now() < give_up) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return -1;
}

absl::StatusOr<v1::Task> DaemonProcess::RunTask(const v1::SubmitTaskRequest& request) {
  grpc::ClientContext sctx;
  v1::SubmitTaskResponse resp;
  grpc::Status s = tasks_->SubmitTask(&sctx, request, &resp);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }
  grpc::ClientContext wctx;
  v1::WatchTaskRequest w;
  w.set_task_id(resp.task_id());
  w.set_skip_tokens(true);
  auto reader = tasks_->WatchTask(&wctx, w);
  v1::TaskEvent ev;
  while (reader->Read(&ev)) {
  }
  grpc::Status ws = reader->Finish();
  if (!ws.ok()) return absl::InternalError(ws.error_message());
  grpc::ClientContext gctx;
  v1::GetTaskRequest g;
  g.set_task_id(resp.task_id());
  v1::Task task;
  s = tasks_->GetTask(&gctx, g, &task);
  if (!s.ok()) return absl::InternalError(s.error_message());
  return task;
}

}  // namespace qkvshare::testing

#include "daemon/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "daemon/rpc_limits.h"
#include "daemon/unix_socket.h"

namespace qkvshare::daemon {

absl::StatusOr<std::unique_ptr<Server>> Server::Start(ServerCore* core, const Options& options) {
  std::unique_ptr<Server> s(new Server(core));
  QKV_ASSIGN_OR_RETURN(s->socket_path_, UnixSocketPath(options.listen));
  bool removed_stale = false;
  QKV_RETURN_IF_ERROR(PrepareUnixSocketPath(s->socket_path_, &removed_stale));
  if (removed_stale) spdlog::warn("removed the stale socket {} of a previous run", s->socket_path_);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials());
  int tcp_port = 0;
  if (!options.tcp_listen.empty()) {
    QKV_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> tcp_creds,
                         TcpServerCredentials(options.tcp_security));
    builder.AddListeningPort(options.tcp_listen, tcp_creds, &tcp_port);
  }
  ApplyRpcLimits(options.max_rpc_threads, options.max_message_bytes, builder);
  builder.RegisterService(&s->tasks_);
  builder.RegisterService(&s->catalog_);
  builder.RegisterService(&s->cards_);
  builder.RegisterService(&s->admin_);
  // The socket is created by bind(): with this umask it is born 0660, so
  // there is no window in which others could connect.
  const mode_t old_umask = umask(0117);
  s->server_ = builder.BuildAndStart();
  umask(old_umask);
  if (s->server_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("gRPC could not listen on ", options.listen,
                                               options.tcp_listen.empty() ? "" : " / ",
                                               options.tcp_listen));
  }
  if (!options.tcp_listen.empty() && tcp_port == 0) {
    s->server_->Shutdown();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.tcp_listen));
  }
  QKV_RETURN_IF_ERROR(SetSocketMode(s->socket_path_, 0660));
  s->SetServing(true);
  spdlog::info(
      "listening on {}{}", options.listen,
      options.tcp_listen.empty()
          ? ""
          : absl::StrCat(" and ", options.tcp_listen, " (bearer token",
                         options.tcp_security.tls_cert_file.empty() ? ", loopback only" : ", TLS",
                         ")"));
  return s;
}

Server::~Server() { Stop(absl::ZeroDuration()); }

void Server::SetServing(bool serving) {
  if (server_ != nullptr && server_->GetHealthCheckService() != nullptr) {
    server_->GetHealthCheckService()->SetServingStatus(serving);
  }
}

void Server::Stop(absl::Duration deadline) {
  if (server_ == nullptr) return;
  server_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(absl::ToInt64Milliseconds(deadline)));
  server_->Wait();
  server_.reset();
  unlink(socket_path_.c_str());
}

}  // namespace qkvshare::daemon

// File: daemon/server.h
// -----------------------------------------------------------------------------
// Server: the gRPC transport of qkvshared. Registers the qkvshare.v1 services
// over a ServerCore, the standard grpc.health.v1.Health service and server
// reflection, and listens on the Unix socket (created with mode 0660: group
// membership is the authorization) plus an optional TCP address (every call
// needs the bearer token, daemon/tcp_auth.h).
//
// Lifecycle: Start() -> SetServing(false) when draining -> Stop() -> destroy.
// Thread safety: thread-safe.
#ifndef QKVSHARE_DAEMON_SERVER_H_
#define QKVSHARE_DAEMON_SERVER_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "daemon/grpc_services.h"
#include "daemon/server_core.h"
#include "daemon/tcp_auth.h"

namespace qkvshare::daemon {

class Server {
 public:
  struct Options {
    std::string listen;      // unix:/... address (required)
    std::string tcp_listen;  // host:port, empty: none
    // Token and TLS of the TCP listener (daemon/tcp_auth.h); required with
    // tcp_listen.
    TcpSecurity tcp_security;
    int64_t max_message_bytes = 64 << 20;
    // gRPC server threads (grpc::ResourceQuota::SetMaxThreads); calls
    // beyond them are RESOURCE_EXHAUSTED.
    int max_rpc_threads = 256;
  };

  // Errors: InvalidArgument (address), TcpServerCredentials' (token file),
  // AlreadyExists (another daemon listens
  // on the socket), Unavailable (gRPC could not bind), file-system errors.
  static absl::StatusOr<std::unique_ptr<Server>> Start(ServerCore* core, const Options& options);
  ~Server();

  // The health service's answer for the whole server ("").
  void SetServing(bool serving);
  // Stops the gRPC server; in-flight calls get until `deadline` to finish.
  void Stop(absl::Duration deadline);

  const std::string& socket_path() const { return socket_path_; }

 private:
  explicit Server(ServerCore* core) : tasks_(core), catalog_(core), cards_(core), admin_(core) {}

  TaskServiceImpl tasks_;
  CatalogServiceImpl catalog_;
  CardServiceImpl cards_;
  AdminServiceImpl admin_;
  std::unique_ptr<grpc::Server> server_;
  std::string socket_path_;
};

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_SERVER_H_

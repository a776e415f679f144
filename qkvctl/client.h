// File: qkvctl/client.h
// -----------------------------------------------------------------------------
// Client: qkvctl's connection to qkvshared, one method per RPC of the
// qkvshare.v1 API (proto/qkvshare/v1/*.proto), with statuses converted to
// absl::Status (same codes, the daemon's message).
//
// Connect() waits at most `connect_timeout` for the channel to be ready and
// fails fast when nothing listens; every RPC then uses wait_for_ready(false),
// and unary RPCs a deadline of `rpc_timeout` (streams have none). An
// UNAVAILABLE status always carries a self-contained one-line message naming
// the address ("cannot connect to unix:///...: no daemon is listening (...)",
// "lost connection to ...", "daemon at ... is unavailable: shutting down").
//
// Lifecycle: Connect() -> any RPCs -> destroy. Thread safety: the RPC methods
// may be called concurrently (gRPC stubs are thread-safe).
//
// Example:
//   QKV_ASSIGN_OR_RETURN(auto client, Client::Connect({.address = addr}));
//   QKV_ASSIGN_OR_RETURN(v1::Status status, client->GetStatus());
#ifndef QKVSHARE_QKVCTL_CLIENT_H_
#define QKVSHARE_QKVCTL_CLIENT_H_

#include <cstdint>
#include <functional>
#include <istream>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "qkvshare/v1/admin.grpc.pb.h"
#include "qkvshare/v1/cards.grpc.pb.h"
#include "qkvshare/v1/catalog.grpc.pb.h"
#include "qkvshare/v1/tasks.grpc.pb.h"

namespace qkvshare::qkvctl {

namespace v1 = ::qkvshare::v1;

class Client {
 public:
  struct Options {
    // gRPC target: "unix:///run/qkvshare/qkvshared.sock", "127.0.0.1:7420", ...
    std::string address;
    // Longest wait for the connection before Connect() gives up.
    absl::Duration connect_timeout = absl::Seconds(3);
    // Deadline of each unary RPC.
    absl::Duration rpc_timeout = absl::Seconds(30);
    // Largest message accepted (card chunks, task listings).
    int max_receive_bytes = 64 << 20;
    // Bearer token sent on every call ("authorization: Bearer <token>"), for
    // a daemon's TCP listener (tcp_auth_token_file); empty: none.
    std::string token;
    // PEM CA certificates for a TLS TCP listener; empty: a TCP address is
    // reached over gRPC local (loopback) credentials.
    std::string tls_ca_pem;
  };

  // Opens the channel and waits until it is ready. Errors: Unavailable with
  // "cannot connect to <address>: <diagnosis>" (see connection.h), when the
  // channel fails or is not ready within connect_timeout.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const Options& options);

  const std::string& address() const { return options_.address; }

  // AdminService.
  absl::StatusOr<v1::Status> GetStatus();
  absl::StatusOr<v1::Stats> GetStats();

  // CatalogService.
  absl::StatusOr<v1::ListAgentsResponse> ListAgents();
  absl::StatusOr<v1::ListWorkflowsResponse> ListWorkflows();
  absl::StatusOr<v1::ReloadWorkflowsResponse> ReloadWorkflows();

  // TaskService.
  absl::StatusOr<v1::SubmitTaskResponse> SubmitTask(const v1::SubmitTaskRequest& request);
  absl::StatusOr<v1::Task> GetTask(const std::string& task_id);
  absl::StatusOr<v1::ListTasksResponse> ListTasks(int limit);
  absl::StatusOr<v1::Task> CancelTask(const std::string& task_id);
  absl::StatusOr<v1::Task> ResumeTask(const std::string& task_id, const std::string& input);
  // Calls `on_event` for each event, in order, until the stream ends (OK
  // after the task's final event) or `on_event` returns false (the call is
  // then cancelled and OK returned). Errors: the stream's status.
  absl::Status WatchTask(const v1::WatchTaskRequest& request,
                         const std::function<bool(const v1::TaskEvent&)>& on_event);

  // CardService.
  absl::StatusOr<v1::ListCardsResponse> ListCards();
  absl::StatusOr<v1::CardInfo> GetCard(const std::string& id);
  absl::Status DeleteCard(const std::string& id);
  // Streams the card's .qkvcard bytes to `sink`, chunk by chunk, and returns
  // the byte count. When `sink` returns false the call is cancelled and
  // Cancelled returned (the caller knows why).
  absl::StatusOr<int64_t> ExportCard(const std::string& id,
                                     const std::function<bool(const std::string& chunk)>& sink);
  // Sends all of `in` in chunks of `chunk_bytes` and returns the stored
  // card. Errors: the daemon's (InvalidArgument for a corrupt card, ...);
  // DataLoss when reading `in` fails.
  absl::StatusOr<v1::CardInfo> ImportCard(std::istream& in, size_t chunk_bytes = 1 << 20);

 private:
  Client(Options options, std::shared_ptr<grpc::Channel> channel);

  // absl::Status of an RPC that returned `s`: same code and message, except
  // UNAVAILABLE and DEADLINE_EXCEEDED, whose messages name the address.
  absl::Status Convert(const grpc::Status& s) const;
  void PrepareUnary(grpc::ClientContext* context) const;
  // After an UNAVAILABLE call: true when the connection broke (daemon gone or
  // crashed), false when the daemon answered UNAVAILABLE itself. Waits up to
  // 100 ms for the channel to notice a broken transport.
  bool ConnectionLost() const;

  Options options_;
  std::shared_ptr<grpc::Channel> channel_;  // gRPC's API shares channels
  std::unique_ptr<v1::AdminService::Stub> admin_;
  std::unique_ptr<v1::CatalogService::Stub> catalog_;
  std::unique_ptr<v1::TaskService::Stub> tasks_;
  std::unique_ptr<v1::CardService::Stub> cards_;
};

}  // namespace qkvshare::qkvctl

#endif  // QKVSHARE_QKVCTL_CLIENT_H_

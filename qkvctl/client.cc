#include "qkvctl/client.h"

#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/client_interceptor.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "qkvctl/connection.h"

namespace qkvshare::qkvctl {

namespace {

// gRPC logs connection failures to stderr itself; qkvctl prints one line of
// its own instead. GRPC_VERBOSITY in the environment keeps gRPC's logs.
void SilenceGrpcLogs() {
  if (std::getenv("GRPC_VERBOSITY") != nullptr) return;
  gpr_set_log_function([](gpr_log_func_args*) {});
}

// Adds "authorization: Bearer <token>" to every call's initial metadata.
class BearerTokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(const std::string* value) : value_(value) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *value_});
    }
    methods->Proceed();
  }

 private:
  const std::string* value_;
};

class BearerTokenInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(const std::string& token)
      : value_(absl::StrCat("Bearer ", token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new BearerTokenInterceptor(&value_);
  }

 private:
  const std::string value_;
};

// Unix sockets: plaintext (the socket's group is the authorization). TCP:
// TLS with the given CA, else gRPC local credentials (loopback only), as
// the daemon's TCP listener expects.
std::shared_ptr<grpc::ChannelCredentials> CredentialsFor(const Client::Options& options) {
  if (!UnixSocketPathOf(options.address).empty()) return grpc::InsecureChannelCredentials();
  if (!options.tls_ca_pem.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_ca_pem;
    return grpc::SslCredentials(ssl);
  }
  return grpc::experimental::LocalCredentials(LOCAL_TCP);
}

std::chrono::system_clock::time_point Deadline(absl::Duration d) {
  return absl::ToChronoTime(absl::Now() + d);
}

}  // namespace

Client::Client(Options options, std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      admin_(v1::AdminService::NewStub(channel_)),
      catalog_(v1::CatalogService::NewStub(channel_)),
      tasks_(v1::TaskService::NewStub(channel_)),
      cards_(v1::CardService::NewStub(channel_)) {}

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const Options& options) {
  SilenceGrpcLogs();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_bytes);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!options.token.empty()) {
    interceptors.push_back(std::make_unique<BearerTokenInterceptorFactory>(options.token));
  }
  std::shared_ptr<grpc::Channel> channel = grpc::experimental::CreateCustomChannelWithInterceptors(
      options.address, CredentialsFor(options), args, std::move(interceptors));
  auto deadline = Deadline(options.connect_timeout);
  // One attempt: a failed connection (TRANSIENT_FAILURE) is reported at once
  // instead of waiting out gRPC's reconnect backoff.
  grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN ||
        !channel->WaitForStateChange(state, deadline)) {
      return absl::UnavailableError(absl::StrCat("cannot connect to ", options.address, ": ",
                                                 DiagnoseUnreachable(options.address)));
    }
    state = channel->GetState(/*try_to_connect=*/true);
  }
  return std::unique_ptr<Client>(new Client(options, std::move(channel)));
}

bool Client::ConnectionLost() const {
  // A status the daemon sent leaves the connection READY; a broken transport
  // moves the channel to IDLE or TRANSIENT_FAILURE, possibly a moment after
  // the failed call returns.
  grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/false);
  if (state == GRPC_CHANNEL_READY) {
    channel_->WaitForStateChange(state, Deadline(absl::Milliseconds(100)));
    state = channel_->GetState(/*try_to_connect=*/false);
  }
  return state != GRPC_CHANNEL_READY;
}

void Client::PrepareUnary(grpc::ClientContext* context) const {
  context->set_wait_for_ready(false);
  context->set_deadline(Deadline(options_.rpc_timeout));
}

absl::Status Client::Convert(const grpc::Status& s) const {
  if (s.ok()) return absl::OkStatus();
  const std::string& address = options_.address;
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      if (!ConnectionLost()) {
        // The daemon itself answered UNAVAILABLE (e.g. shutting down).
        return absl::UnavailableError(
            absl::StrCat("daemon at ", address, " is unavailable: ", s.error_message()));
      }
      if (!SocketAcceptsConnections(address)) {
        return absl::UnavailableError(
            absl::StrCat("lost connection to ", address, ": ", DiagnoseUnreachable(address)));
      }
      return absl::UnavailableError(
          absl::StrCat("lost connection to ", address,
                       ": the daemon closed it (stopped or crashed? see journalctl -u qkvshared)"));
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::DeadlineExceededError(absl::StrCat("no answer from ", address, " within ",
                                                      absl::FormatDuration(options_.rpc_timeout),
                                                      " (--timeout)"));
    default:
      // absl::StatusCode and grpc::StatusCode share their numeric values.
      return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
  }
}

absl::StatusOr<v1::Status> Client::GetStatus() {
  grpc::ClientContext context;
  PrepareUnary(&context);
  v1::Status response;
  grpc::Status s = admin_->GetStatus(&context, v1::GetStatusRequest(), &response);
  if (!s.ok()) return Convert(s);
  return response;
}

absl::StatusOr<v1::Stats> Client::GetStats() {
  grpc::ClientContext context;
  PrepareUnary(&context);
  v1::Stats response;
  grpc::Status s = admin_->GetStats(&context, v1::GetStatsRequest(), &response);
  if (!s.ok()) return Convert(s);
  return response;
}

absl::StatusOr<v1::ListAgentsResponse> Client::ListAgents() {
  grpc::ClientContext context;
  PrepareUnary(&context);
  v1::ListAgentsResponse response;
  grpc::Status s = catalog_->ListAgents(&context, v1::ListAgentsRequest(), &response);
  if (!s.ok()) return Convert(s);
  return response;
}

absl::StatusOr<v1::ListWorkflowsResponse> Client::ListWorkflows() {
  grpc::ClientContext context;
  PrepareUnary(&context);
  v1::ListWorkflowsResponse response;
  grpc::Status s = catalog_->ListWorkflows(&context, v1::ListWorkflowsRequest(), &response);
  if (!s.ok()) return Convert(s);
  return response;
}

absl::StatusOr<v1::ReloadWorkflowsResponse> Client::ReloadWorkflows() {
  grpc::ClientContext context;
  PrepareUnary(&context);
  v1::ReloadWorkflowsResponse response;
  grpc::Status s = catalog_->ReloadWorkflows(&context, v1::ReloadWorkflowsRequest(), &response);
  if (!s.ok()) return Convert(s);
  return response;
}

absl::StatusOr<v1::SubmitTaskResponse> Client::SubmitTask(const v1::SubmitTaskRequest& request) {
  grpc::ClientContext context;
  PrepareUnary(&context);
  v1::SubmitTaskResponse response;
  grpc::Status s = tasks_->SubmitTask(&context, request, &response);
  if (!s.ok()) return Convert(s);
  return response;
}

absl::StatusOr<v1::Task> Client::GetTask(const std::string& task_id) {
  grpc::ClientContext context;
  PrepareUnary(&context);
  v1::GetTaskRequest request;
  request.set_task_id(task_id);
  v1::Task response;
  grpc::Status s = tasks_->GetTask(&context, request, &response);
  if (!s.ok()) return Convert(s);
  return response;
}

absl::StatusOr<v1::ListTasksResponse> Client::ListTasks(int limit) {
  grpc::ClientContext context;
  PrepareUnary(&context);
  v1::ListTasksRequest request;
  request.set_limit(limit);
  v1::ListTasksResponse response;
  grpc::Status s = tasks_->ListTasks(&context, request, &response);
  if (!s.ok()) return Convert(s);
  return response;
}

absl::StatusOr<v1::Task> Client::CancelTask(const std::string& task_id) {
  grpc::ClientContext context;
  PrepareUnary(&context);
  v1::CancelTaskRequest request;
  request.set_task_id(task_id);
  v1::Task response;
  grpc::Status s = tasks_->CancelTask(&context, request, &response);
  if (!s.ok()) return Convert(s);
  return response;
}

absl::StatusOr<v1::Task> Client::ResumeTask(const std::string& task_id, const std::string& input) {
  grpc::ClientContext context;
  PrepareUnary(&context);
  v1::ResumeTaskRequest request;
  request.set_task_id(task_id);
  request.set_input(input);
  v1::Task response;
  grpc::Status s = tasks_->ResumeTask(&context, request, &response);
  if (!s.ok()) return Convert(s);
  return response;
}

absl::Status Client::WatchTask(const v1::WatchTaskRequest& request,
                               const std::function<bool(const v1::TaskEvent&)>& on_event) {
  grpc::ClientContext context;
  context.set_wait_for_ready(false);
  std::unique_ptr<grpc::ClientReader<v1::TaskEvent>> reader = tasks_->WatchTask(&context, request);
  v1::TaskEvent event;
  bool stopped = false;
  while (reader->Read(&event)) {
    if (!on_event(event)) {
      stopped = true;
      context.TryCancel();
      break;
    }
  }
  grpc::Status s = reader->Finish();
  if (stopped) return absl::OkStatus();
  return Convert(s);
}

absl::StatusOr<v1::ListCardsResponse> Client::ListCards() {
  grpc::ClientContext context;
  PrepareUnary(&context);
  v1::ListCardsResponse response;
  grpc::Status s = cards_->ListCards(&context, v1::ListCardsRequest(), &response);
  if (!s.ok()) return Convert(s);
  return response;
}

absl::StatusOr<v1::CardInfo> Client::GetCard(const std::string& id) {
  grpc::ClientContext context;
  PrepareUnary(&context);
  v1::GetCardRequest request;
  request.set_id(id);
  v1::CardInfo response;
  grpc::Status s = cards_->GetCard(&context, request, &response);
  if (!s.ok()) return Convert(s);
  return response;
}

absl::Status Client::DeleteCard(const std::string& id) {
  grpc::ClientContext context;
  PrepareUnary(&context);
  v1::DeleteCardRequest request;
  request.set_id(id);
  v1::DeleteCardResponse response;
  return Convert(cards_->DeleteCard(&context, request, &response));
}

absl::StatusOr<int64_t> Client::ExportCard(
    const std::string& id, const std::function<bool(const std::string& chunk)>& sink) {
  grpc::ClientContext context;
  context.set_wait_for_ready(false);
  v1::ExportCardRequest request;
  request.set_id(id);
  std::unique_ptr<grpc::ClientReader<v1::CardChunk>> reader = cards_->ExportCard(&context, request);
  v1::CardChunk chunk;
  int64_t bytes = 0;
  while (reader->Read(&chunk)) {
    if (!sink(chunk.data())) {
      context.TryCancel();
      reader->Finish();
      return absl::CancelledError("ExportCard: stopped by the sink");
    }
    bytes += static_cast<int64_t>(chunk.data().size());
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) return Convert(s);
  return bytes;
}

absl::StatusOr<v1::CardInfo> Client::ImportCard(std::istream& in, size_t chunk_bytes) {
  grpc::ClientContext context;
  context.set_wait_for_ready(false);
  v1::CardInfo response;
  std::unique_ptr<grpc::ClientWriter<v1::CardChunk>> writer =
      cards_->ImportCard(&context, &response);
  std::vector<char> buf(chunk_bytes);
  v1::CardChunk chunk;
  bool read_error = false;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    std::streamsize n = in.gcount();
    if (in.bad()) {
      read_error = true;
      break;
    }
    if (n == 0) break;
    chunk.set_data(buf.data(), static_cast<size_t>(n));
    // false: the stream is broken (the daemon rejected it); Finish() says why.
    if (!writer->Write(chunk)) break;
  }
  if (read_error) {
    context.TryCancel();
    writer->Finish();
    return absl::DataLossError("ImportCard: reading the card file failed");
  }
  writer->WritesDone();
  grpc::Status s = writer->Finish();
  if (!s.ok()) return Convert(s);
  return response;
}

}  // namespace qkvshare::qkvctl

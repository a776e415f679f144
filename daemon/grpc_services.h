// File: daemon/grpc_services.h
// -----------------------------------------------------------------------------
// The qkvshare.v1 gRPC services: thin, stateless adapters that hold a
// ServerCore*, convert requests, and map absl::Status to gRPC status codes
// (daemon/grpc_status.h). All logic lives in ServerCore.
//
// Thread safety: thread-safe (gRPC calls them from its thread pool).
#ifndef QKVSHARE_DAEMON_GRPC_SERVICES_H_
#define QKVSHARE_DAEMON_GRPC_SERVICES_H_

#include "daemon/server_core.h"
#include "qkvshare/v1/admin.grpc.pb.h"
#include "qkvshare/v1/cards.grpc.pb.h"
#include "qkvshare/v1/catalog.grpc.pb.h"
#include "qkvshare/v1/tasks.grpc.pb.h"

namespace qkvshare::daemon {

class TaskServiceImpl final : public v1::TaskService::Service {
 public:
  explicit TaskServiceImpl(ServerCore* core) : core_(core) {}
  grpc::Status SubmitTask(grpc::ServerContext* ctx, const v1::SubmitTaskRequest* req,
                          v1::SubmitTaskResponse* resp) override;
  grpc::Status WatchTask(grpc::ServerContext* ctx, const v1::WatchTaskRequest* req,
                         grpc::ServerWriter<v1::TaskEvent>* writer) override;
  grpc::Status GetTask(grpc::ServerContext* ctx, const v1::GetTaskRequest* req,
                       v1::Task* resp) override;
  grpc::Status ListTasks(grpc::ServerContext* ctx, const v1::ListTasksRequest* req,
                         v1::ListTasksResponse* resp) override;
  grpc::Status CancelTask(grpc::ServerContext* ctx, const v1::CancelTaskRequest* req,
                          v1::Task* resp) override;
  grpc::Status ResumeTask(grpc::ServerContext* ctx, const v1::ResumeTaskRequest* req,
                          v1::Task* resp) override;

 private:
  ServerCore* core_;
};

class CatalogServiceImpl final : public v1::CatalogService::Service {
 public:
  explicit CatalogServiceImpl(ServerCore* core) : core_(core) {}
  grpc::Status ListAgents(grpc::ServerContext* ctx, const v1::ListAgentsRequest* req,
                          v1::ListAgentsResponse* resp) override;
  grpc::Status ListWorkflows(grpc::ServerContext* ctx, const v1::ListWorkflowsRequest* req,
                             v1::ListWorkflowsResponse* resp) override;
  grpc::Status ReloadWorkflows(grpc::ServerContext* ctx, const v1::ReloadWorkflowsRequest* req,
                               v1::ReloadWorkflowsResponse* resp) override;

 private:
  ServerCore* core_;
};

class CardServiceImpl final : public v1::CardService::Service {
 public:
  explicit CardServiceImpl(ServerCore* core) : core_(core) {}
  grpc::Status ListCards(grpc::ServerContext* ctx, const v1::ListCardsRequest* req,
                         v1::ListCardsResponse* resp) override;
  grpc::Status GetCard(grpc::ServerContext* ctx, const v1::GetCardRequest* req,
                       v1::CardInfo* resp) override;
  grpc::Status ExportCard(grpc::ServerContext* ctx, const v1::ExportCardRequest* req,
                          grpc::ServerWriter<v1::CardChunk>* writer) override;
  grpc::Status ImportCard(grpc::ServerContext* ctx, grpc::ServerReader<v1::CardChunk>* reader,
                          v1::CardInfo* resp) override;
  grpc::Status DeleteCard(grpc::ServerContext* ctx, const v1::DeleteCardRequest* req,
                          v1::DeleteCardResponse* resp) override;

 private:
  ServerCore* core_;
};

class AdminServiceImpl final : public v1::AdminService::Service {
 public:
  explicit AdminServiceImpl(ServerCore* core) : core_(core) {}
  grpc::Status GetStatus(grpc::ServerContext* ctx, const v1::GetStatusRequest* req,
                         v1::Status* resp) override;
  grpc::Status GetStats(grpc::ServerContext* ctx, const v1::GetStatsRequest* req,
                        v1::Stats* resp) override;

 private:
  ServerCore* core_;
};

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_GRPC_SERVICES_H_

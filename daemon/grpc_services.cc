#include "daemon/grpc_services.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "daemon/grpc_status.h"

namespace qkvshare::daemon {

grpc::Status TaskServiceImpl::SubmitTask(grpc::ServerContext*, const v1::SubmitTaskRequest* req,
                                         v1::SubmitTaskResponse* resp) {
  absl::StatusOr<std::string> id = core_->SubmitTask(*req);
  if (!id.ok()) return ToGrpcStatus(id.status());
  resp->set_task_id(*id);
  return grpc::Status::OK;
}

grpc::Status TaskServiceImpl::WatchTask(grpc::ServerContext* ctx, const v1::WatchTaskRequest* req,
                                        grpc::ServerWriter<v1::TaskEvent>* writer) {
  absl::Status s = core_->tasks().Watch(
      req->task_id(), req->from_seq(),
      [&](const v1::TaskEvent& ev) {
        if (req->skip_tokens() && ev.has_token()) return true;
        return writer->Write(ev);
      },
      [&] { return !ctx->IsCancelled(); });
  return ToGrpcStatus(s);
}

grpc::Status TaskServiceImpl::GetTask(grpc::ServerContext*, const v1::GetTaskRequest* req,
                                      v1::Task* resp) {
  absl::StatusOr<v1::Task> t = core_->tasks().Get(req->task_id());
  if (!t.ok()) return ToGrpcStatus(t.status());
  *resp = std::move(*t);
  return grpc::Status::OK;
}

grpc::Status TaskServiceImpl::ListTasks(grpc::ServerContext*, const v1::ListTasksRequest* req,
                                        v1::ListTasksResponse* resp) {
  for (v1::Task& t : core_->tasks().List(req->limit())) *resp->add_tasks() = std::move(t);
  return grpc::Status::OK;
}

grpc::Status TaskServiceImpl::CancelTask(grpc::ServerContext*, const v1::CancelTaskRequest* req,
                                         v1::Task* resp) {
  absl::StatusOr<v1::Task> t = core_->tasks().Cancel(req->task_id(), "cancelled by client");
  if (!t.ok()) return ToGrpcStatus(t.status());
  *resp = std::move(*t);
  return grpc::Status::OK;
}

grpc::Status TaskServiceImpl::ResumeTask(grpc::ServerContext*, const v1::ResumeTaskRequest* req,
                                         v1::Task* resp) {
  absl::StatusOr<v1::Task> t = core_->ResumeTask(req->task_id(), req->input());
  if (!t.ok()) return ToGrpcStatus(t.status());
  *resp = std::move(*t);
  return grpc::Status::OK;
}

grpc::Status CatalogServiceImpl::ListAgents(grpc::ServerContext*, const v1::ListAgentsRequest*,
                                            v1::ListAgentsResponse* resp) {
  for (v1::AgentInfo& a : core_->ListAgents()) *resp->add_agents() = std::move(a);
  return grpc::Status::OK;
}

grpc::Status CatalogServiceImpl::ListWorkflows(grpc::ServerContext*,
                                               const v1::ListWorkflowsRequest*,
                                               v1::ListWorkflowsResponse* resp) {
  for (v1::WorkflowInfo& w : core_->ListWorkflows()) *resp->add_workflows() = std::move(w);
  return grpc::Status::OK;
}

grpc::Status CatalogServiceImpl::ReloadWorkflows(grpc::ServerContext*,
                                                 const v1::ReloadWorkflowsRequest*,
                                                 v1::ReloadWorkflowsResponse* resp) {
  absl::StatusOr<std::vector<std::string>> names = core_->ReloadWorkflows();
  if (!names.ok()) return ToGrpcStatus(names.status());
  for (const std::string& n : *names) resp->add_workflows(n);
  return grpc::Status::OK;
}

grpc::Status CardServiceImpl::ListCards(grpc::ServerContext*, const v1::ListCardsRequest*,
                                        v1::ListCardsResponse* resp) {
  *resp = core_->ListCards();
  return grpc::Status::OK;
}

grpc::Status CardServiceImpl::GetCard(grpc::ServerContext*, const v1::GetCardRequest* req,
                                      v1::CardInfo* resp) {
  absl::StatusOr<v1::CardInfo> info = core_->GetCard(req->id());
  if (!info.ok()) return ToGrpcStatus(info.status());
  *resp = std::move(*info);
  return grpc::Status::OK;
}

grpc::Status CardServiceImpl::ExportCard(grpc::ServerContext*, const v1::ExportCardRequest* req,
                                         grpc::ServerWriter<v1::CardChunk>* writer) {
  return ToGrpcStatus(core_->ExportCard(req->id(), [&](absl::Span<const uint8_t> chunk) {
    v1::CardChunk c;
    c.set_data(reinterpret_cast<const char*>(chunk.data()), chunk.size());
    return writer->Write(c);
  }));
}

grpc::Status CardServiceImpl::ImportCard(grpc::ServerContext*,
                                         grpc::ServerReader<v1::CardChunk>* reader,
                                         v1::CardInfo* resp) {
  // Chunk by chunk into shared memory (daemon/card_import.h): a bad header
  // is refused after the first chunk, nothing is buffered.
  v1::CardChunk chunk;
  absl::StatusOr<v1::CardInfo> info = core_->ImportCard([&](std::string* out) {
    if (!reader->Read(&chunk)) return false;
    out->swap(*chunk.mutable_data());
    return true;
  });
  if (!info.ok()) return ToGrpcStatus(info.status());
  *resp = std::move(*info);
  return grpc::Status::OK;
}

grpc::Status CardServiceImpl::DeleteCard(grpc::ServerContext*, const v1::DeleteCardRequest* req,
                                         v1::DeleteCardResponse*) {
  return ToGrpcStatus(core_->DeleteCard(req->id()));
}

grpc::Status AdminServiceImpl::GetStatus(grpc::ServerContext*, const v1::GetStatusRequest*,
                                         v1::Status* resp) {
  *resp = core_->GetStatus();
  return grpc::Status::OK;
}

grpc::Status AdminServiceImpl::GetStats(grpc::ServerContext*, const v1::GetStatsRequest*,
                                        v1::Stats* resp) {
  *resp = core_->GetStats();
  return grpc::Status::OK;
}

}  // namespace qkvshare::daemon

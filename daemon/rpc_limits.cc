#include "daemon/rpc_limits.h"

namespace qkvshare::daemon {

void ApplyRpcLimits(int max_rpc_threads, int64_t max_message_bytes, grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(static_cast<int>(max_message_bytes));
  grpc::ResourceQuota quota("qkvshared");
  quota.SetMaxThreads(max_rpc_threads);
  builder.SetResourceQuota(quota);
}

}  // namespace qkvshare::daemon

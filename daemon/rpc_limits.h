// File: daemon/rpc_limits.h
// -----------------------------------------------------------------------------
// The per-server caps of qkvshared's gRPC server (docs/operations.md
// "Security"): the largest message a client may send and the number of
// server threads. A sync gRPC server runs one thread per call in progress
// (streams included), so the thread cap bounds concurrent calls: beyond it a
// call is refused with RESOURCE_EXHAUSTED instead of taking another thread.
//
// Thread safety: call before BuildAndStart(), from one thread.
#ifndef QKVSHARE_DAEMON_RPC_LIMITS_H_
#define QKVSHARE_DAEMON_RPC_LIMITS_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>

namespace qkvshare::daemon {

// Sets `builder`'s receive limit to `max_message_bytes` (limits.max_message_bytes)
// and its thread cap to `max_rpc_threads` (limits.max_rpc_threads, through a
// grpc::ResourceQuota named "qkvshared").
void ApplyRpcLimits(int max_rpc_threads, int64_t max_message_bytes, grpc::ServerBuilder& builder);

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_RPC_LIMITS_H_

// File: daemon/grpc_status.h
// -----------------------------------------------------------------------------
// The one place where absl::Status becomes grpc::Status (TF Serving's
// grpc_status_util). Codes map one to one; messages are cut at 1024 bytes.
#ifndef QKVSHARE_DAEMON_GRPC_STATUS_H_
#define QKVSHARE_DAEMON_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace qkvshare::daemon {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_GRPC_STATUS_H_

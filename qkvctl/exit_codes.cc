#include "qkvctl/exit_codes.h"

namespace qkvshare::qkvctl {

ExitCode ExitCodeForRpc(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kUnavailable:
      return kExitUsage;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kAborted:
      return kExitRejected;
    default:
      return kExitDaemonError;
  }
}

const char* ExitCodeHelp() {
  return "Exit codes:\n"
         "  0  ok\n"
         "  1  the task ended FAILED or CANCELLED (submit --wait, watch)\n"
         "  2  usage or local file error; the daemon cannot be reached (not running, socket\n"
         "     permissions, connection lost) or is unavailable (shutting down)\n"
         "  3  not found (task, card, workflow)\n"
         "  4  rejected by the daemon (invalid argument, queue full, quota, already exists,\n"
         "     card in use), or a card file is not a valid card\n"
         "  5  daemon error (internal, unimplemented, no answer within --timeout)\n";
}

}  // namespace qkvshare::qkvctl

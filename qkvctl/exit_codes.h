// File: qkvctl/exit_codes.h
// -----------------------------------------------------------------------------
// qkvctl's exit codes (also in `qkvctl --help` and docs/operations.md) and
// the mapping from a daemon RPC status to them.
//
//   0  ok
//   1  the task ended FAILED or CANCELLED (submit --wait, watch)
//   2  usage error, local file error, or the daemon cannot be reached
//      (not running, socket permissions, connection lost, UNAVAILABLE)
//   3  not found: the task, card or workflow does not exist (NOT_FOUND)
//   4  rejected by the daemon: INVALID_ARGUMENT, FAILED_PRECONDITION,
//      RESOURCE_EXHAUSTED, ALREADY_EXISTS, OUT_OF_RANGE, PERMISSION_DENIED,
//      UNAUTHENTICATED, ABORTED; or a local .qkvcard file that is not a valid
//      card (cards inspect FILE)
//   5  daemon error: INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED,
//      DEADLINE_EXCEEDED (no answer within --timeout), CANCELLED
//
// Thread safety: pure functions.
#ifndef QKVSHARE_QKVCTL_EXIT_CODES_H_
#define QKVSHARE_QKVCTL_EXIT_CODES_H_

#include "absl/status/status.h"

namespace qkvshare::qkvctl {

enum ExitCode : int {
  kExitOk = 0,
  kExitTaskFailed = 1,
  kExitUsage = 2,
  kExitNotFound = 3,
  kExitRejected = 4,
  kExitDaemonError = 5,
};

// Exit code for the status of an RPC to the daemon (OK -> kExitOk).
ExitCode ExitCodeForRpc(const absl::Status& status);

// The exit-code table above as help text (one code per line).
const char* ExitCodeHelp();

}  // namespace qkvshare::qkvctl

#endif  // QKVSHARE_QKVCTL_EXIT_CODES_H_

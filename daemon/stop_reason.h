// File: daemon/stop_reason.h
// -----------------------------------------------------------------------------
// The API's stop reason of a hop (qkvshare.v1.StopReason, HopResult.stop and
// its text twin HopResult.stop_reason) for the runtime's agents::StopReason.
// One mapping, so the daemon, the proto and qkvctl name the same reasons.
//
// Thread safety: pure functions.
#ifndef QKVSHARE_DAEMON_STOP_REASON_H_
#define QKVSHARE_DAEMON_STOP_REASON_H_

#include "agents/generator.h"
#include "qkvshare/v1/tasks.pb.h"

namespace qkvshare::daemon {

// The proto value of `reason`; kCancelled (a cancelled hop has no result)
// maps to STOP_REASON_UNSPECIFIED.
v1::StopReason StopReasonToProto(agents::StopReason reason);

// Sets `result`'s `stop` and its text twin `stop_reason`
// (agents::StopReasonName: the proto value's name, lowercase, without the
// "STOP_REASON_" prefix) from `reason`.
void SetStopReason(agents::StopReason reason, v1::HopResult* result);

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_STOP_REASON_H_

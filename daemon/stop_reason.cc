#include "daemon/stop_reason.h"

#include <string>

namespace qkvshare::daemon {

v1::StopReason StopReasonToProto(agents::StopReason reason) {
  switch (reason) {
    case agents::StopReason::kStopToken:
      return v1::STOP_REASON_STOP_TOKEN;
    case agents::StopReason::kStopString:
      return v1::STOP_REASON_STOP_STRING;
    case agents::StopReason::kMaxNewTokens:
      return v1::STOP_REASON_MAX_NEW_TOKENS;
    case agents::StopReason::kContextFull:
      return v1::STOP_REASON_CONTEXT_FULL;
    case agents::StopReason::kCancelled:
      break;
  }
  return v1::STOP_REASON_UNSPECIFIED;
}

void SetStopReason(agents::StopReason reason, v1::HopResult* result) {
  result->set_stop(StopReasonToProto(reason));
  result->set_stop_reason(result->stop() == v1::STOP_REASON_UNSPECIFIED
                              ? ""
                              : std::string(agents::StopReasonName(reason)));
}

}  // namespace qkvshare::daemon

#include "daemon/stop_reason.h"

#include <string>

#include "absl/strings/ascii.h"
#include "gtest/gtest.h"

namespace qkvshare::daemon {
namespace {

// Every reason a finished hop can have maps to its own proto value whose text
// is the runtime's own name for it.
TEST(StopReasonTest, ProtoValueAndTextMatchTheRuntime) {
  const struct {
    agents::StopReason runtime;
    v1::StopReason proto;
    const char* text;
  } kCases[] = {
      {agents::StopReason::kStopToken, v1::STOP_REASON_STOP_TOKEN, "stop_token"},
      {agents::StopReason::kStopString, v1::STOP_REASON_STOP_STRING, "stop_string"},
      {agents::StopReason::kMaxNewTokens, v1::STOP_REASON_MAX_NEW_TOKENS, "max_new_tokens"},
      {agents::StopReason::kContextFull, v1::STOP_REASON_CONTEXT_FULL, "context_full"},
  };
  for (const auto& c : kCases) {
    EXPECT_EQ(StopReasonToProto(c.runtime), c.proto) << c.text;
    EXPECT_EQ(v1::StopReason_Name(c.proto), "STOP_REASON_" + absl::AsciiStrToUpper(c.text));
    EXPECT_EQ(agents::StopReasonName(c.runtime), c.text);
    v1::HopResult r;
    SetStopReason(c.runtime, &r);
    EXPECT_EQ(r.stop(), c.proto);
    EXPECT_EQ(r.stop_reason(), c.text);
  }
  // Every proto value but UNSPECIFIED is one of the above.
  EXPECT_EQ(v1::StopReason_MAX, v1::STOP_REASON_CONTEXT_FULL);
  EXPECT_EQ(StopReasonToProto(agents::StopReason::kCancelled), v1::STOP_REASON_UNSPECIFIED);
}

}  // namespace
}  // namespace qkvshare::daemon

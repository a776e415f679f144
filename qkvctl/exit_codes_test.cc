#include "qkvctl/exit_codes.h"

#include <string>

#include "gtest/gtest.h"

namespace qkvshare::qkvctl {
namespace {

TEST(ExitCodesTest, EveryStatusCodeMapsToTheDocumentedClass) {
  EXPECT_EQ(ExitCodeForRpc(absl::OkStatus()), 0);
  EXPECT_EQ(ExitCodeForRpc(absl::UnavailableError("shutting down")), 2);
  EXPECT_EQ(ExitCodeForRpc(absl::NotFoundError("task t-1")), 3);
  for (absl::StatusCode c :
       {absl::StatusCode::kInvalidArgument, absl::StatusCode::kFailedPrecondition,
        absl::StatusCode::kResourceExhausted, absl::StatusCode::kAlreadyExists,
        absl::StatusCode::kOutOfRange, absl::StatusCode::kPermissionDenied,
        absl::StatusCode::kUnauthenticated, absl::StatusCode::kAborted}) {
    EXPECT_EQ(ExitCodeForRpc(absl::Status(c, "x")), 4) << absl::StatusCodeToString(c);
  }
  for (absl::StatusCode c : {absl::StatusCode::kInternal, absl::StatusCode::kUnknown,
                             absl::StatusCode::kDataLoss, absl::StatusCode::kUnimplemented,
                             absl::StatusCode::kDeadlineExceeded, absl::StatusCode::kCancelled}) {
    EXPECT_EQ(ExitCodeForRpc(absl::Status(c, "x")), 5) << absl::StatusCodeToString(c);
  }
}

TEST(ExitCodesTest, HelpListsEveryCode) {
  std::string help = ExitCodeHelp();
  for (const char* code : {"  0  ", "  1  ", "  2  ", "  3  ", "  4  ", "  5  "}) {
    EXPECT_NE(help.find(code), std::string::npos) << code;
  }
}

}  // namespace
}  // namespace qkvshare::qkvctl

// File: qkvctl/testing/run_qkvctl.h
// -----------------------------------------------------------------------------
// Runs qkvctl in-process (qkvctl/cli.h RunQkvctl) and captures what it
// prints, for the CLI tests against the fake and the real daemon. Plus a
// whole-file reader for comparing exported cards. Thread-compatible.
#ifndef QKVSHARE_QKVCTL_TESTING_RUN_QKVCTL_H_
#define QKVSHARE_QKVCTL_TESTING_RUN_QKVCTL_H_

#include <string>
#include <vector>

namespace qkvshare::qkvctl::testing {

// Exit code and the text qkvctl wrote to stdout and stderr.
struct Result {
  int code = -1;
  std::string out, err;
};

// Runs `qkvctl args...` (argv[0] is supplied).
Result Run(std::vector<std::string> args);

// The bytes of `path` ("" when it cannot be read).
std::string ReadFile(const std::string& path);

}  // namespace qkvshare::qkvctl::testing

#endif  // QKVSHARE_QKVCTL_TESTING_RUN_QKVCTL_H_

// File: qkvctl/cli.h
// -----------------------------------------------------------------------------
// qkvctl's command line (CLI11): global options, subcommands, help text with
// the exit codes, dispatch to qkvctl/commands.h. main.cc only forwards argv
// and the standard streams here, so the whole CLI is testable in-process.
//
// Global options (before or after the subcommand):
//   --addr ADDR     daemon address (else $QKVSHARE_ADDR, else
//                   unix:///run/qkvshare/qkvshared.sock)
//   --json          machine-readable output
//   --timeout SEC   deadline of each unary RPC (default 30)
//
// Thread safety: reads the environment; do not call concurrently with setenv.
#ifndef QKVSHARE_QKVCTL_CLI_H_
#define QKVSHARE_QKVCTL_CLI_H_

#include <ostream>
#include <string>
#include <vector>

namespace qkvshare::qkvctl {

// Runs qkvctl with `args` (args[0] is the program name) and returns the exit
// code (qkvctl/exit_codes.h). Help goes to `out` (exit 0); usage errors go to
// `err` (exit 2).
int RunQkvctl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace qkvshare::qkvctl

#endif  // QKVSHARE_QKVCTL_CLI_H_

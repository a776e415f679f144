// qkvctl: the operator's command line for qkvshared. See `qkvctl --help` and
// docs/operations.md.
#include <iostream>
#include <string>
#include <vector>

#include "qkvctl/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  return qkvshare::qkvctl::RunQkvctl(args, std::cout, std::cerr);
}

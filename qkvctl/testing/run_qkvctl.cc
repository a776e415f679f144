#include "qkvctl/testing/run_qkvctl.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "qkvctl/cli.h"

namespace qkvshare::qkvctl::testing {

Result Run(std::vector<std::string> args) {
  args.insert(args.begin(), "qkvctl");
  std::ostringstream out, err;
  Result r;
  r.code = RunQkvctl(args, out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace qkvshare::qkvctl::testing

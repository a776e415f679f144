#include "qkvctl/testing/short_temp_dir.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <vector>

namespace qkvshare::qkvctl::testing {

ShortTempDir::ShortTempDir() {
  std::vector<char> tmpl = {'/', 't', 'm', 'p', '/', 'q', 'k', 'v', 'c', 't',
                            'l', '-', 'X', 'X', 'X', 'X', 'X', 'X', '\0'};
  if (mkdtemp(tmpl.data()) == nullptr) {
    std::perror("ShortTempDir: mkdtemp /tmp/qkvctl-XXXXXX");
    std::abort();
  }
  path_ = tmpl.data();
  chmod(path_.c_str(), 0755);
}

ShortTempDir::~ShortTempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

}  // namespace qkvshare::qkvctl::testing

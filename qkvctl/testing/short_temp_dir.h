// File: qkvctl/testing/short_temp_dir.h
// -----------------------------------------------------------------------------
// A fresh directory under /tmp for Unix sockets in tests: sun_path holds only
// 107 bytes, and $TEST_TMPDIR paths are often longer. Removed (with its
// files) on destruction. Thread-compatible.
#ifndef QKVSHARE_QKVCTL_TESTING_SHORT_TEMP_DIR_H_
#define QKVSHARE_QKVCTL_TESTING_SHORT_TEMP_DIR_H_

#include <string>

namespace qkvshare::qkvctl::testing {

class ShortTempDir {
 public:
  // Creates /tmp/qkvctl-XXXXXX (mode 0755); aborts the test binary if /tmp is
  // not writable (a broken test machine, not an input error).
  ShortTempDir();
  ~ShortTempDir();
  ShortTempDir(const ShortTempDir&) = delete;
  ShortTempDir& operator=(const ShortTempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace qkvshare::qkvctl::testing

#endif  // QKVSHARE_QKVCTL_TESTING_SHORT_TEMP_DIR_H_

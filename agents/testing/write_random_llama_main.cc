// Writes a random model directory from a RandomLlamaSpec given as JSON, e.g.
// for the offline numpy cross-check (scripts/make_numpy_reference.sh):
//   bazel run //agents/testing:write_random_llama -- OUT_DIR '{"model_type": "qwen2"}'
#include <cstdio>
#include <string>

#include "agents/testing/random_llama.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s OUT_DIR SPEC_JSON\n", argv[0]);
    return 2;
  }
  auto spec = qkvshare::agents::testing::RandomLlamaSpecFromJson(argv[2]);
  if (!spec.ok()) {
    std::fprintf(stderr, "%s\n", spec.status().ToString().c_str());
    return 1;
  }
  absl::Status st = qkvshare::agents::testing::WriteRandomLlama(argv[1], *spec);
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}

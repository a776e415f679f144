// Writes the golden card (cachecard/testing/golden_card.h) to the path given
// as the only argument. After a format change (kCardFormatVersion bumped):
//   bazel run //cachecard:make_golden_card -- $PWD/cachecard/testdata/golden_v<N>.qkvcard
#include <cstdio>

#include "cachecard/card_file.h"
#include "cachecard/testing/golden_card.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT.qkvcard\n", argv[0]);
    return 2;
  }
  auto card = qkvshare::cachecard::testing::MakeGoldenCard();
  if (!card.ok()) {
    std::fprintf(stderr, "make_golden_card: %s\n", card.status().ToString().c_str());
    return 1;
  }
  absl::Status s = qkvshare::cachecard::ExportCard(**card, argv[1]);
  if (!s.ok()) {
    std::fprintf(stderr, "make_golden_card: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("wrote %s (%zu bytes)\n", argv[1], (*card)->bytes().size());
  return 0;
}

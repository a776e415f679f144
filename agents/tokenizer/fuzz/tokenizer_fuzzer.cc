// libFuzzer target for the tokenizer (scripts/fuzz.sh tokenizer_fuzzer):
// Encode and Decode of arbitrary bytes with the bundled stories260K
// tokenizer.json (SentencePiece-style byte-fallback BPE). The tokenizer file
// is read from $QKV_FUZZ_TOKENIZER (scripts/fuzz.sh sets it), else
// models/stories260K/tokenizer.json relative to the working directory.
//
// The first input byte picks the mode, the rest is the text:
//   bit 0  add_special_tokens for Encode
//   bit 1  also decode the bytes as a stream of little-endian int32 ids
//          (arbitrary, out-of-range and negative ones included)
// Invariants (abort on violation): Encode of valid UTF-8 succeeds (byte
// fallback covers every character) and yields ids < vocab_size(); invalid
// UTF-8 is InvalidArgument; the StreamingDetokenizer's pushes plus Flush()
// equal Decode() of the same ids; Decode of any ids returns valid UTF-8.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agents/tokenizer/tokenizer.h"
#include "agents/tokenizer/utf8.h"

namespace qkvshare::agents {
namespace {

void Check(bool ok, const char* what, const absl::Status& s = absl::OkStatus()) {
  if (!ok) {
    std::fprintf(stderr, "invariant violated: %s (%s)\n", what, s.ToString().c_str());
    std::abort();
  }
}

const Tokenizer& TheTokenizer() {
  static const Tokenizer* tok = [] {
    const char* env = std::getenv("QKV_FUZZ_TOKENIZER");
    const std::string path = env != nullptr ? env : "models/stories260K/tokenizer.json";
    absl::StatusOr<std::unique_ptr<Tokenizer>> t = Tokenizer::FromFile(path);
    Check(t.ok(), "the tokenizer loads", t.status());
    return t->release();
  }();
  return *tok;
}

void CheckDecode(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  const std::string text = tok.Decode(ids);
  Check(tokenizer_internal::FindInvalidUtf8(text) == std::string_view::npos,
        "Decode returns valid UTF-8");
  StreamingDetokenizer stream(tok);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.Push(id);
  streamed += stream.Flush();
  Check(streamed == text, "streamed decode == Decode");
}

}  // namespace
}  // namespace qkvshare::agents

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qkvshare::agents;  // NOLINT
  if (size == 0) return 0;
  const Tokenizer& tok = TheTokenizer();
  const uint8_t mode = data[0];
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);

  absl::StatusOr<std::vector<int32_t>> ids = tok.Encode(text, (mode & 1) != 0);
  if (tokenizer_internal::FindInvalidUtf8(text) == std::string_view::npos) {
    Check(ids.ok(), "Encode of valid UTF-8 succeeds", ids.status());
    for (int32_t id : *ids) Check(id >= 0 && id < tok.vocab_size(), "id < vocab_size");
    CheckDecode(tok, *ids);
  } else {
    Check(!ids.ok() && ids.status().code() == absl::StatusCode::kInvalidArgument,
          "invalid UTF-8 is InvalidArgument", ids.status());
  }
  if ((mode & 2) != 0) {
    std::vector<int32_t> raw((size - 1) / 4);
    if (!raw.empty()) std::memcpy(raw.data(), data + 1, raw.size() * 4);
    CheckDecode(tok, raw);
  }
  return 0;
}

// libFuzzer target for GGUF files (scripts/fuzz.sh gguf): arbitrary bytes
// through the reader, and whatever it accepts through the model conversion
// (config, tokenizer.json text, weights as dense / q8 / q4).
//
// Invariants (abort on violation): every failure is a Status (InvalidArgument
// from the reader, InvalidArgument / NotFound / ResourceExhausted from the
// conversion), never a crash or a sanitizer report; every accepted tensor
// lies inside the input; converted weights have the shapes the config asks
// for.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "agents/gguf/gguf_file.h"
#include "agents/gguf/gguf_model.h"
#include "agents/gguf/gguf_tokenizer.h"

namespace qkvshare::agents::gguf {
namespace {

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

void Run(const uint8_t* data, size_t size) {
  absl::StatusOr<std::unique_ptr<GgufFile>> parsed =
      GgufFile::FromBytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz.gguf");
  if (!parsed.ok()) {
    Check(parsed.status().code() == absl::StatusCode::kInvalidArgument, "reader error code");
    return;
  }
  std::shared_ptr<const GgufFile> file = std::move(*parsed);
  for (const GgufTensor& t : file->tensors()) {
    Check(file->data_offset() + t.offset + t.nbytes <= size, "tensor inside the input");
  }
  (void)TokenizerJsonFromGguf(*file);
  absl::StatusOr<ModelConfig> config = ConfigFromGguf(*file);
  if (!config.ok()) return;
  // Bound the work of a huge declared model (the shapes come from metadata;
  // the tensors must exist in the input for the conversion to allocate).
  for (std::optional<weights::BlockFormat> format :
       {std::optional<weights::BlockFormat>(), std::optional(weights::BlockFormat::kQ8),
        std::optional(weights::BlockFormat::kQ4)}) {
    absl::StatusOr<std::unique_ptr<WeightFiles>> w = WeightsFromGguf(file, *config, format);
    if (!w.ok()) continue;
    const TensorInfo* embed = (*w)->Find("model.embed_tokens.weight");
    Check(embed != nullptr && embed->shape.size() == 2 && embed->shape[0] == config->vocab_size &&
              embed->shape[1] == config->hidden_size,
          "embedding shape");
  }
}

}  // namespace
}  // namespace qkvshare::agents::gguf

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qkvshare::agents::gguf::Run(data, size);
  return 0;
}

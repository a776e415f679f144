// StreamingDetokenizer (declared in tokenizer.h).
#include <string>
#include <utility>
#include <vector>

#include "agents/tokenizer/bpe_tokenizer.h"
#include "agents/tokenizer/string_view_compat.h"
#include "agents/tokenizer/tokenizer.h"
#include "agents/tokenizer/utf8.h"

namespace qkvshare::agents {
namespace {

using tokenizer_internal::IdDecodeStream;
using tokenizer_internal::kReplacementChar;

// Fallback for Tokenizer implementations other than BpeTokenizer: re-decodes
// every id on each Push (O(n) per id) and holds back a trailing U+FFFD, which
// may be the start of a character still arriving.
class ReDecodeStream final : public IdDecodeStream {
 public:
  ReDecodeStream(const Tokenizer& tokenizer, bool skip_special)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}

  void Push(int32_t id, std::string* out) override {
    ids_.push_back(id);
    std::string text = tokenizer_.Decode(ids_, skip_special_);
    std::string_view stable = text;
    while (stable.size() >= kReplacementChar.size() &&
           stable.substr(stable.size() - kReplacementChar.size()) == kReplacementChar)
      stable.remove_suffix(kReplacementChar.size());
    EmitNew(stable, out);
  }
  void Flush(std::string* out) override { EmitNew(tokenizer_.Decode(ids_, skip_special_), out); }

 private:
  void EmitNew(std::string_view text, std::string* out) {
    // Only text that extends what was already emitted can be emitted.
    if (text.size() <= emitted_.size() || text.substr(0, emitted_.size()) != emitted_) return;
    out->append(text.substr(emitted_.size()));
    emitted_.assign(text.data(), text.size());
  }

  const Tokenizer& tokenizer_;
  const bool skip_special_;
  std::vector<int32_t> ids_;
  std::string emitted_;
};

}  // namespace

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tokenizer, bool skip_special_tokens,
                                           absl::Span<const int32_t> prefix) {
  if (const auto* bpe = dynamic_cast<const tokenizer_internal::BpeTokenizer*>(&tokenizer)) {
    stream_ = bpe->NewDecodeStream(skip_special_tokens);
  } else {
    stream_ = std::make_unique<ReDecodeStream>(tokenizer, skip_special_tokens);
  }
  // The prefix only sets the context: its text is discarded.
  std::string discarded;
  for (int32_t id : prefix) {
    stream_->Push(id, &discarded);
    discarded.clear();
  }
}

StreamingDetokenizer::~StreamingDetokenizer() = default;
StreamingDetokenizer::StreamingDetokenizer(StreamingDetokenizer&&) noexcept = default;
StreamingDetokenizer& StreamingDetokenizer::operator=(StreamingDetokenizer&&) noexcept = default;

std::string StreamingDetokenizer::Push(int32_t id) {
  std::string out;
  stream_->Push(id, &out);
  return out;
}

std::string StreamingDetokenizer::Flush() {
  std::string out;
  stream_->Flush(&out);
  return out;
}

}  // namespace qkvshare::agents

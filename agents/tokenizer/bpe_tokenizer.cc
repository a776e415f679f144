#include "agents/tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "agents/tokenizer/utf8.h"
#include "base/status_macros.h"

namespace qkvshare::agents::tokenizer_internal {

class BpeTokenizer::Stream final : public IdDecodeStream {
 public:
  Stream(const BpeTokenizer& tokenizer, bool skip_special)
      : tokenizer_(tokenizer), skip_special_(skip_special), stream_(*tokenizer.parts_.decoder) {}

  void Push(int32_t id, std::string* out) override {
    const std::string* token = tokenizer_.TokenString(id);
    if (token == nullptr || (skip_special_ && tokenizer_.IsSpecial(id))) return;
    stream_.Push(*token, out);
  }
  void Flush(std::string* out) override { stream_.Flush(out); }

 private:
  const BpeTokenizer& tokenizer_;
  const bool skip_special_;
  DecodeStream stream_;
};

absl::StatusOr<std::unique_ptr<BpeTokenizer>> BpeTokenizer::Create(Parts parts) {
  if (parts.model == nullptr || parts.added == nullptr || parts.post_processor == nullptr ||
      parts.decoder == nullptr) {
    return absl::InvalidArgumentError(
        "BpeTokenizer::Create: model, added, post_processor and decoder are required");
  }
  return std::unique_ptr<BpeTokenizer>(new BpeTokenizer(std::move(parts)));
}

absl::Status BpeTokenizer::EncodePiece(std::string text, bool at_text_start,
                                       std::vector<int32_t>* ids) const {
  std::vector<PreToken> words;
  words.push_back(PreToken{std::move(text), at_text_start});
  if (parts_.pre_tokenizer != nullptr) {
    QKV_RETURN_IF_ERROR(parts_.pre_tokenizer->PreTokenize(&words));
  }
  for (const PreToken& word : words) QKV_RETURN_IF_ERROR(parts_.model->Tokenize(word.text, ids));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> BpeTokenizer::Encode(std::string_view text,
                                                          bool add_special_tokens) const {
  if (const size_t bad = FindInvalidUtf8(text); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("Encode: text is not valid UTF-8 (ill-formed or truncated sequence at byte ",
                     bad, " of ", text.size(), ")"));
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  std::vector<AddedVocabulary::Segment> segments;
  parts_.added->SplitRaw(text, &segments);
  std::vector<AddedVocabulary::Segment> normalized_segments;
  for (const AddedVocabulary::Segment& segment : segments) {
    if (segment.id >= 0) {
      ids.push_back(segment.id);
      continue;
    }
    std::string piece(text.substr(segment.begin, segment.end - segment.begin));
    const bool at_text_start = segment.begin == 0;
    if (parts_.normalizer != nullptr) {
      absl::Status s = parts_.normalizer->Normalize(&piece);
      if (!s.ok()) return absl::Status(s.code(), absl::StrCat("Encode: ", s.message()));
    }
    absl::Status status;
    if (!parts_.added->has_normalized_tokens()) {
      status = EncodePiece(std::move(piece), at_text_start, &ids);
    } else {
      normalized_segments.clear();
      parts_.added->SplitNormalized(piece, &normalized_segments);
      for (const AddedVocabulary::Segment& sub : normalized_segments) {
        if (sub.id >= 0) {
          ids.push_back(sub.id);
          continue;
        }
        status = EncodePiece(piece.substr(sub.begin, sub.end - sub.begin),
                             at_text_start && sub.begin == 0, &ids);
        if (!status.ok()) break;
      }
    }
    if (!status.ok())
      return absl::Status(status.code(), absl::StrCat("Encode: ", status.message()));
  }
  if (add_special_tokens) return parts_.post_processor->Apply(ids);
  return ids;
}

std::unique_ptr<IdDecodeStream> BpeTokenizer::NewDecodeStream(bool skip_special_tokens) const {
  return std::make_unique<Stream>(*this, skip_special_tokens);
}

std::string BpeTokenizer::Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const {
  std::string out;
  Stream stream(*this, skip_special_tokens);
  for (int32_t id : ids) stream.Push(id, &out);
  stream.Flush(&out);
  return out;
}

int32_t BpeTokenizer::vocab_size() const {
  return std::max(parts_.model->id_limit(), parts_.added->id_limit());
}

std::optional<int32_t> BpeTokenizer::TokenToId(std::string_view token) const {
  if (std::optional<int32_t> id = parts_.added->TokenToId(token)) return id;
  return parts_.model->TokenToId(token);
}

const std::string* BpeTokenizer::TokenString(int32_t id) const {
  if (const AddedToken* added = parts_.added->FindById(id)) return &added->content;
  return parts_.model->IdToToken(id);
}

std::string BpeTokenizer::IdToToken(int32_t id) const {
  const std::string* token = TokenString(id);
  return token == nullptr ? std::string() : *token;
}

bool BpeTokenizer::IsSpecial(int32_t id) const {
  const AddedToken* added = parts_.added->FindById(id);
  return added != nullptr && added->special;
}

std::optional<int32_t> BpeTokenizer::bos_id() const { return parts_.post_processor->bos_id(); }

}  // namespace qkvshare::agents::tokenizer_internal

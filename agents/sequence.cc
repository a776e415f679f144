#include "agents/sequence.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace qkvshare::agents {

Sequence::Sequence(ModelHandle model, const SequenceOptions& options)
    : model_(std::move(model)), options_(options) {}

Sequence::~Sequence() = default;

absl::StatusOr<std::unique_ptr<Sequence>> Sequence::Create(ModelHandle model,
                                                           const SequenceOptions& options) {
  if (model == nullptr) return absl::InvalidArgumentError("Sequence: null model");
  const int64_t limit = model->config().context_limit();
  if (options.max_tokens < 0 || options.max_tokens > limit) {
    return absl::InvalidArgumentError(absl::StrCat("Sequence: max_tokens ", options.max_tokens,
                                                   " outside [0, context limit ", limit, "]"));
  }
  if (options.prefill_chunk_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("Sequence: prefill_chunk_tokens ",
                                                   options.prefill_chunk_tokens, " must be > 0"));
  }
  const int64_t max_tokens = options.max_tokens > 0 ? options.max_tokens : limit;
  std::unique_ptr<Sequence> seq(new Sequence(std::move(model), options));
  QKV_ASSIGN_OR_RETURN(
      seq->cache_, KvCache::Create(seq->model_->config().kv_shape(), seq->model_->compute_dtype(),
                                   max_tokens, std::min(options.initial_capacity, max_tokens)));
  seq->state_ = seq->model_->engine().NewState();
  return seq;
}

absl::StatusOr<LogitsView> Sequence::Append(absl::Span<const int32_t> ids, LogitsMode mode) {
  const ModelConfig& config = model_->config();
  const int64_t vocab = config.vocab_size;
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n == 0) return LogitsView{logits_.data(), 0, vocab};
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", ids[i], " at index ", i,
                                                     " is outside the vocabulary [0, ", vocab,
                                                     ") of ", model_->dir()));
    }
  }
  const int64_t start = cache_->length();
  if (start + n > cache_->max_tokens()) {
    return absl::OutOfRangeError(
        absl::StrCat(start, " + ", n, " tokens exceed the context limit of ", cache_->max_tokens(),
                     " tokens (", model_->dir(), ")"));
  }
  QKV_RETURN_IF_ERROR(cache_->Reserve(start + n));
  const int64_t rows = mode == LogitsMode::kAll ? n : (mode == LogitsMode::kLast ? 1 : 0);
  if (static_cast<int64_t>(logits_.size()) < rows * vocab) logits_.resize(rows * vocab);

  const int64_t chunk = options_.prefill_chunk_tokens;
  for (int64_t done = 0; done < n; done += chunk) {
    const int64_t len = std::min(chunk, n - done);
    const bool last_chunk = done + len == n;
    LogitsMode chunk_mode = LogitsMode::kNone;
    float* out = nullptr;
    if (mode == LogitsMode::kAll) {
      chunk_mode = LogitsMode::kAll;
      out = logits_.data() + done * vocab;
    } else if (mode == LogitsMode::kLast && last_chunk) {
      chunk_mode = LogitsMode::kLast;
      out = logits_.data();
    }
    absl::Status st = model_->engine().Forward(*state_, *cache_, ids.subspan(done, len), chunk_mode,
                                               out, recorder_.get());
    if (!st.ok()) {
      cache_->Truncate(start);
      if (recorder_ != nullptr) recorder_->Truncate(start);
      return st;
    }
    QKV_RETURN_IF_ERROR(cache_->SetLength(start + done + len));
  }
  token_ids_.insert(token_ids_.end(), ids.begin(), ids.end());
  return LogitsView{logits_.data(), rows, vocab};
}

absl::StatusOr<absl::Span<const float>> Sequence::Decode(int32_t id) {
  QKV_ASSIGN_OR_RETURN(LogitsView view, Append(absl::MakeConstSpan(&id, 1), LogitsMode::kLast));
  return view.row(0);
}

void Sequence::Truncate(int64_t n) {
  cache_->Truncate(n);
  token_ids_.resize(cache_->length());
  if (recorder_ != nullptr) recorder_->Truncate(cache_->length());
}

absl::Status Sequence::SetTokensAfterInjection(absl::Span<const int32_t> ids) {
  if (static_cast<int64_t>(ids.size()) != cache_->length()) {
    return absl::FailedPreconditionError(absl::StrCat("SetTokensAfterInjection: ", ids.size(),
                                                      " ids but the KV cache holds ",
                                                      cache_->length(), " tokens"));
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= model_->config().vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("SetTokensAfterInjection: token id ", ids[i],
                                                     " at index ", i,
                                                     " is outside the vocabulary"));
    }
  }
  token_ids_.assign(ids.begin(), ids.end());
  if (recorder_ != nullptr) recorder_->Clear();
  return absl::OkStatus();
}

void Sequence::EnableAttentionCapture(int window) {
  const ModelConfig& c = model_->config();
  recorder_ =
      std::make_unique<AttentionRecorder>(c.num_layers, c.num_kv_heads, std::max(1, window));
}

absl::StatusOr<AttentionCapture> Sequence::GetAttentionCapture() const {
  if (recorder_ == nullptr) {
    return absl::FailedPreconditionError("attention capture is off (EnableAttentionCapture)");
  }
  return recorder_->Export(cache_->length());
}

}  // namespace qkvshare::agents

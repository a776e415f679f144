#include "agents/generator.h"

#include <algorithm>
#include <chrono>
#include <memory>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace qkvshare::agents {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// Streams completion text, holding back what may begin a stop string.
class StopStringFilter {
 public:
  explicit StopStringFilter(const std::vector<std::string>& stops) : stops_(stops) {}

  // Adds `piece`; returns the text that is final now. Sets matched() when a
  // stop string completed (the text before it is returned, the rest dropped).
  std::string Push(std::string_view piece) {
    pending_.append(piece);
    size_t cut = std::string::npos;
    for (const std::string& s : stops_) cut = std::min(cut, pending_.find(s));
    if (cut != std::string::npos) {
      matched_ = true;
      std::string out = pending_.substr(0, cut);
      pending_.clear();
      return out;
    }
    // Longest suffix of pending_ that is a proper prefix of a stop string.
    size_t hold = 0;
    for (const std::string& s : stops_) {
      for (size_t n = std::min(s.size() - 1, pending_.size()); n > hold; --n) {
        if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) {
          hold = n;
          break;
        }
      }
    }
    std::string out = pending_.substr(0, pending_.size() - hold);
    pending_.erase(0, pending_.size() - hold);
    return out;
  }
  // What is held at the end (no stop string can complete any more).
  std::string Finish() { return std::exchange(pending_, std::string()); }
  bool matched() const { return matched_; }

 private:
  const std::vector<std::string>& stops_;
  std::string pending_;
  bool matched_ = false;
};

}  // namespace

std::string_view StopReasonName(StopReason reason) {
  switch (reason) {
    case StopReason::kStopToken:
      return "stop_token";
    case StopReason::kStopString:
      return "stop_string";
    case StopReason::kMaxNewTokens:
      return "max_new_tokens";
    case StopReason::kContextFull:
      return "context_full";
    case StopReason::kCancelled:
      return "cancelled";
  }
  return "?";
}

absl::StatusOr<GenerateResult> Generate(Sequence& seq, absl::Span<const int32_t> prompt_ids,
                                        const GenerateOptions& options) {
  const Clock::time_point start = Clock::now();
  QKV_ASSIGN_OR_RETURN(Sampler sampler, Sampler::Create(options.sampling));
  const Tokenizer* tokenizer = seq.model().tokenizer();
  if (options.max_new_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens ", options.max_new_tokens, " < 0"));
  }
  for (const std::string& s : options.stop_strings) {
    if (s.empty()) return absl::InvalidArgumentError("empty stop string");
  }
  if (!options.stop_strings.empty() && tokenizer == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("stop strings need a tokenizer; ", seq.model().dir(), " has none"));
  }
  const std::vector<int32_t>& stop_ids = options.stop_token_ids.has_value()
                                             ? *options.stop_token_ids
                                             : seq.model().config().generation.eos_token_ids;

  GenerateResult result;
  result.timings.tokens_in = static_cast<int64_t>(prompt_ids.size());
  // Prefill.
  std::vector<int32_t> feed(prompt_ids.begin(), prompt_ids.end());
  if (feed.empty()) {
    if (seq.length() == 0) {
      return absl::InvalidArgumentError("Generate: empty prompt on an empty sequence");
    }
    feed.push_back(seq.token_ids().back());
    seq.Truncate(seq.length() - 1);
  }
  QKV_ASSIGN_OR_RETURN(LogitsView prefill, seq.Append(feed, LogitsMode::kLast));
  result.timings.prefill_ms = MsSince(start);
  absl::Span<const float> logits = prefill.row(0);

  std::unique_ptr<StreamingDetokenizer> detok;
  if (tokenizer != nullptr) {
    detok = std::make_unique<StreamingDetokenizer>(*tokenizer, options.skip_special_tokens,
                                                   seq.token_ids());
  }
  StopStringFilter filter(options.stop_strings);
  Clock::time_point first_token;
  int64_t decode_steps = 0;
  bool fed_last = true;  // the last generated token is in the cache
  result.stop_reason = StopReason::kMaxNewTokens;
  while (static_cast<int>(result.ids.size()) < options.max_new_tokens) {
    const int32_t next = sampler.Sample(logits);
    if (result.ids.empty()) {
      first_token = Clock::now();
      result.timings.ttft_ms = MsSince(start);
    }
    if (std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) {
      result.stop_reason = StopReason::kStopToken;
      result.stop_token = next;
      break;
    }
    result.ids.push_back(next);
    fed_last = false;
    std::string piece;
    if (detok != nullptr) {
      piece = filter.Push(detok->Push(next));
      result.text += piece;
    }
    const bool go_on = !options.on_token || options.on_token(next, piece);
    if (filter.matched()) {
      result.stop_reason = StopReason::kStopString;
      break;
    }
    if (!go_on) {
      result.stop_reason = StopReason::kCancelled;
      break;
    }
    if (static_cast<int>(result.ids.size()) == options.max_new_tokens) break;
    if (seq.length() >= seq.max_tokens()) {
      result.stop_reason = StopReason::kContextFull;
      break;
    }
    QKV_ASSIGN_OR_RETURN(logits, seq.Decode(next));
    ++decode_steps;
    fed_last = true;
  }
  if (decode_steps > 0) {
    result.timings.decode_ms = MsSince(first_token);
    result.timings.decode_tokens_per_s = decode_steps * 1000.0 / result.timings.decode_ms;
  }
  result.timings.tokens_out = static_cast<int64_t>(result.ids.size());
  if (detok != nullptr && !filter.matched()) {
    std::string rest = filter.Push(detok->Flush());
    if (!filter.matched()) rest += filter.Finish();
    if (filter.matched() && result.stop_reason != StopReason::kStopToken) {
      result.stop_reason = StopReason::kStopString;
    }
    result.text += rest;
    if (!rest.empty() && options.on_token) options.on_token(kFlushId, rest);
  }
  if (options.feed_final_token && !fed_last && seq.length() < seq.max_tokens()) {
    QKV_RETURN_IF_ERROR(
        seq.Append(absl::MakeConstSpan(&result.ids.back(), 1), LogitsMode::kNone).status());
  }
  return result;
}

}  // namespace qkvshare::agents

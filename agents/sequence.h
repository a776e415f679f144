// File: agents/sequence.h
// -----------------------------------------------------------------------------
// Sequence: one agent's running token sequence on a shared Model. It owns the
// sequence's KvCache (agents/kv_cache.h, layout in docs/kv_cache.md) and the
// token ids the cache holds, and runs the forward pass over new tokens:
//   - Append(ids): prefill / extend after the current contents, in chunks of
//     SequenceOptions::prefill_chunk_tokens (a long prompt never needs the
//     full T x T attention matrix at once), with logits for the last position
//     (default), all appended positions, or none;
//   - Decode(id): one token, logits of that position;
//   - Truncate / Reset;
//   - kv_cache() + SetTokensAfterInjection() for CacheCard build/injection;
//   - optional attention capture (agents/attention_capture.h).
//
// Errors leave the Sequence unchanged (the KV cache may hold scribbles past
// length(), whose contents are unspecified by contract).
//
// Lifecycle: Create() -> Append/Decode/Truncate... -> destroy. Keeps its
// ModelHandle, so the model outlives it. Thread safety: NOT thread-safe; one
// thread at a time per Sequence (different Sequences may run concurrently,
// also on the same Model).
//
// Example:
//   QKV_ASSIGN_OR_RETURN(auto seq, Sequence::Create(model));
//   QKV_ASSIGN_OR_RETURN(LogitsView lv, seq->Append(prompt_ids));  // last row
//   int32_t next = ArgMax(lv.row(0));
//   QKV_ASSIGN_OR_RETURN(absl::Span<const float> logits, seq->Decode(next));
#ifndef QKVSHARE_AGENTS_SEQUENCE_H_
#define QKVSHARE_AGENTS_SEQUENCE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "agents/attention_capture.h"
#include "agents/kv_cache.h"
#include "agents/logits.h"
#include "agents/model.h"
#include "agents/torch/llama_engine.h"

namespace qkvshare::agents {

struct SequenceOptions {
  // Longest sequence in tokens; 0: the model's context limit
  // (ModelConfig::context_limit()). Must not exceed it.
  int64_t max_tokens = 0;
  // KV cache tokens allocated at creation (0: KvCache's default); the cache
  // grows geometrically up to max_tokens.
  int64_t initial_capacity = 0;
  // Prefill chunk length in tokens (> 0): attention scores of at most
  // chunk x context are materialized at once.
  int prefill_chunk_tokens = 512;
};

class Sequence {
 public:
  // Errors: InvalidArgument for a null model or bad options; ResourceExhausted
  // when the KV cache cannot be allocated.
  static absl::StatusOr<std::unique_ptr<Sequence>> Create(ModelHandle model,
                                                          const SequenceOptions& options = {});

  Sequence(const Sequence&) = delete;
  Sequence& operator=(const Sequence&) = delete;
  ~Sequence();

  const Model& model() const { return *model_; }
  const ModelHandle& model_handle() const { return model_; }
  // Tokens in the KV cache (positions 0 .. length()-1).
  int64_t length() const { return cache_->length(); }
  int64_t max_tokens() const { return cache_->max_tokens(); }
  // The ids at positions 0 .. length()-1.
  const std::vector<int32_t>& token_ids() const { return token_ids_; }

  // Appends `ids` at positions length() .. length() + ids.size() - 1 and
  // returns their logits per `mode` (fp32, rows x vocab_size; kNone: rows 0).
  // The view is valid until the next mutating call. An empty `ids` is a no-op.
  // Errors: InvalidArgument naming the index and value of a token id outside
  // [0, vocab_size); OutOfRange when length() + ids.size() > max_tokens();
  // ResourceExhausted when the cache cannot grow; Internal for libtorch
  // failures. On error nothing changes.
  absl::StatusOr<LogitsView> Append(absl::Span<const int32_t> ids,
                                    LogitsMode mode = LogitsMode::kLast);

  // Single-token decode: Append({id}, kLast).row(0) (vocab_size floats).
  absl::StatusOr<absl::Span<const float>> Decode(int32_t id);

  // Keeps the first min(n, length()) tokens.
  void Truncate(int64_t n);
  // Empties the sequence (keeps the allocated cache).
  void Reset() { Truncate(0); }

  // The KV cache, for CacheCard build (read) and injection (write). After
  // writing positions [0, n) and calling kv_cache().SetLength(n) the caller
  // MUST call SetTokensAfterInjection with the n ids the cache now holds
  // before the next Append/Decode.
  KvCache& kv_cache() { return *cache_; }
  const KvCache& kv_cache() const { return *cache_; }

  // Declares that the KV cache (filled externally) holds `ids` at positions
  // 0 .. ids.size()-1. Clears the attention capture rows. Errors:
  // FailedPrecondition when ids.size() != kv_cache().length();
  // InvalidArgument for an id outside the vocabulary.
  absl::Status SetTokensAfterInjection(absl::Span<const int32_t> ids);

  // Attention capture of the last `window` query positions (> 0) from now on
  // (see agents/attention_capture.h). Off by default; costs nothing when off.
  void EnableAttentionCapture(int window);
  void DisableAttentionCapture() { recorder_.reset(); }
  // The captured rows over the current context. Errors: FailedPrecondition
  // when capture is off.
  absl::StatusOr<AttentionCapture> GetAttentionCapture() const;

 private:
  Sequence(ModelHandle model, const SequenceOptions& options);

  ModelHandle model_;
  SequenceOptions options_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<internal::LlamaEngine::State> state_;
  std::vector<int32_t> token_ids_;
  std::vector<float> logits_;
  std::unique_ptr<AttentionRecorder> recorder_;
};

}  // namespace qkvshare::agents

#endif  // QKVSHARE_AGENTS_SEQUENCE_H_

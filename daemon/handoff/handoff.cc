#include "daemon/handoff/handoff.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "cachecard/build.h"
#include "cachecard/content_id.h"
#include "cachecard/inject.h"
#include "cachecard/io.h"
#include "daemon/card_budget.h"
#include "daemon/prompt.h"
#include "quant/controller.h"
#include "quant/importance.h"

namespace qkvshare::daemon {

namespace {

double MsSince(absl::Time t) { return absl::ToDoubleMilliseconds(absl::Now() - t); }

// Bytes of an fp16 KV cache holding `tokens` tokens of `shape`.
int64_t Fp16Bytes(const agents::KvShape& shape, int64_t tokens) {
  return tokens * shape.num_layers * 2 * shape.channels() * 2;
}

// Card bytes of `card` and all its ancestors.
int64_t ChainBytes(const cachecard::Card& card, const cachecard::CardResolver& store) {
  int64_t bytes = 0;
  for (const cachecard::Card* c = &card; c != nullptr;) {
    bytes += static_cast<int64_t>(c->metadata().card_bytes);
    const cachecard::CardId& parent = c->metadata().parent_id;
    c = parent.IsZero() ? nullptr : store.Find(parent);
  }
  return bytes;
}

}  // namespace

v1::HandoffMode ToProto(HandoffMode m) {
  switch (m) {
    case HandoffMode::kCard:
      return v1::HANDOFF_MODE_CARD;
    case HandoffMode::kFull:
      return v1::HANDOFF_MODE_FULL;
    case HandoffMode::kReprefill:
      return v1::HANDOFF_MODE_REPREFILL;
  }
  return v1::HANDOFF_MODE_UNSPECIFIED;
}

absl::StatusOr<std::vector<int32_t>> EncodeText(const agents::Model& model, const std::string& text,
                                                bool add_special, const std::string& what,
                                                int64_t max_tokens,
                                                const std::function<absl::Status()>& check_stop) {
  if (model.tokenizer() == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", model.dir(), " has no tokenizer.json; cannot encode ", what));
  }
  if (max_tokens <= 0) return model.tokenizer()->Encode(text, add_special);
  absl::StatusOr<std::vector<int32_t>> ids =
      EncodeBounded(*model.tokenizer(), text, add_special, max_tokens, check_stop);
  if (ids.status().code() == absl::StatusCode::kOutOfRange) {
    return absl::OutOfRangeError(
        absl::StrCat(what, " is ", ids.status().message(), ", over the context limit"));
  }
  return ids;
}

void Handoff::PrepareSender(agents::Sequence& seq, const HandoffConfig* outgoing) {
  if (outgoing != nullptr && outgoing->mode == HandoffMode::kCard &&
      outgoing->policy == BitPolicy::kAdaptive) {
    seq.EnableAttentionCapture(outgoing->importance_window);
  } else {
    seq.DisableAttentionCapture();
  }
}

absl::StatusOr<Received> Handoff::Receive(Agent& agent, const HandedContext& context,
                                          const std::vector<int32_t>& instruction,
                                          const std::string& log_prefix) const {
  agents::Sequence& seq = *agent.sequence;
  const agents::Model& model = *agent.model;
  Received out;
  v1::HandoffStats& stats = out.stats;
  const bool wants_card = context.handoff.mode != HandoffMode::kReprefill;
  stats.set_requested_mode(ToProto(context.handoff.mode));
  stats.set_context_tokens(static_cast<int64_t>(context.ids.size()));
  stats.set_fp16_bytes(Fp16Bytes(seq.kv_cache().shape(), context.ids.size()));
  stats.set_budget_reason(context.budget_reason);
  std::string fallback;
  if (wants_card && !context.card) {
    fallback = context.card_fallback_reason;
  } else if (wants_card && context.fingerprint != model.fingerprint()) {
    fallback = absl::StrCat("fingerprint mismatch: agent '", agent.entry.name, "' runs model '",
                            agent.model_name, "' (", model.fingerprint().Hex().substr(0, 12),
                            "), the card is for ", context.fingerprint.Hex().substr(0, 12));
  }
  if (wants_card && fallback.empty()) {
    const cachecard::Card& card = *context.card;
    stats.set_card_id(card.id().ToHex());
    stats.set_card_bytes(static_cast<int64_t>(card.metadata().card_bytes));
    stats.set_chain_bytes(ChainBytes(card, *store_));
    stats.set_card_tokens(card.metadata().num_tokens);
    stats.set_avg_bits(card.metadata().avg_bits);
    stats.set_build_ms(context.card_build_ms);
    absl::Time t = absl::Now();
    absl::Status s =
        cachecard::InjectCard(card, store_, model.fingerprint().bytes, &seq.kv_cache());
    if (s.ok()) s = seq.SetTokensAfterInjection(context.ids);
    stats.set_inject_ms(MsSince(t));
    if (s.ok()) {
      stats.set_mode(ToProto(context.handoff.mode));
      stats_->Add(Stats::kCardsInjected);
      stats_->Observe(Stats::kInjectMs, stats.inject_ms());
      out.injected = true;
      out.prompt = instruction;
      return out;
    }
    seq.Reset();
    fallback = absl::StrCat("inject failed: ", s.ToString());
  }
  // Re-prefill, requested or as a fallback.
  stats.set_mode(v1::HANDOFF_MODE_REPREFILL);
  if (!fallback.empty()) {
    stats.set_fallback_reason(fallback);
    stats_->Add(Stats::kReprefillFallbacks);
    spdlog::warn("{}: card handoff fell back to re-prefill: {}", log_prefix, fallback);
  }
  if (context.fingerprint == model.fingerprint()) {
    out.prompt = context.ids;
  } else {
    QKV_ASSIGN_OR_RETURN(out.prompt, EncodeText(model, context.text, /*add_special=*/true,
                                                "the context", agent.context_limit));
  }
  stats.set_reprefill_tokens(static_cast<int64_t>(out.prompt.size()));
  out.prompt.insert(out.prompt.end(), instruction.begin(), instruction.end());
  return out;
}

HandedContext Handoff::Send(Agent& agent, const HandoffConfig& h, const cachecard::Card* parent,
                            CardPosition position, const std::string& log_prefix) const {
  agents::Sequence& seq = *agent.sequence;
  const agents::Model& model = *agent.model;
  HandedContext out;
  out.handoff = h;
  out.ids = seq.token_ids();
  out.fingerprint = model.fingerprint();
  if (model.tokenizer() != nullptr) out.text = model.tokenizer()->Decode(out.ids);
  if (h.mode == HandoffMode::kReprefill) return out;

  const int64_t n = seq.length();
  const int64_t first = parent != nullptr ? parent->metadata().total_tokens() : 0;
  absl::Time t0 = absl::Now();

  cachecard::CardEncoding enc = cachecard::CardEncoding::Full();
  std::string policy = "full";
  const CardBudget budget = ApplyMinCardBits(h.bits, agent.min_card_bits, agent.model_name);
  if (h.mode == HandoffMode::kCard) {
    if (!budget.raised_reason.empty()) {
      out.budget_reason = budget.raised_reason;
      spdlog::warn("{}: card budget {}", log_prefix, budget.raised_reason);
    }
    quant::AllocationRequest req;
    req.num_tokens = n - first;
    req.avg_bits = budget.bits;
    req.hop = position.hop;
    req.num_hops = std::max(1, position.num_hops);
    std::vector<float> importance;
    if (h.policy == BitPolicy::kAdaptive && budget.bits != 16) {
      absl::StatusOr<agents::AttentionCapture> cap = seq.GetAttentionCapture();
      absl::StatusOr<std::vector<float>> imp =
          cap.ok() ? quant::TokenImportance({cap->probs.data(), cap->num_layers, cap->num_kv_heads,
                                             static_cast<int>(cap->rows), cap->context},
                                            {h.importance_window, quant::HeadReduction::kMax})
                   : absl::StatusOr<std::vector<float>>(cap.status());
      if (imp.ok() && static_cast<int64_t>(imp->size()) == n) {
        importance.assign(imp->begin() + first, imp->end());
        req.policy = quant::AllocationPolicy::kAdaptive;
        req.importance = importance;
        policy = "adaptive";
      } else {
        spdlog::warn("{}: no attention importance ({}); using uniform bits", log_prefix,
                     imp.ok() ? "size mismatch" : imp.status().ToString());
      }
    }
    if (policy != "adaptive") {
      req.policy = quant::AllocationPolicy::kUniform;
      policy = "uniform";
    }
    absl::StatusOr<quant::BitPlan> plan = quant::AllocateBits(req);
    if (!plan.ok()) {
      out.card_fallback_reason = absl::StrCat("bit allocation failed: ", plan.status().ToString());
      return out;
    }
    enc = cachecard::CardEncoding::Quantized(std::move(*plan),
                                             {quant::GroupAxis::kPerChannel, h.group_size},
                                             {quant::GroupAxis::kPerToken, h.group_size});
  }
  cachecard::Provenance prov;  // the card id is derived from the content
  prov.source_agent = agent.entry.name;
  prov.hop_index = static_cast<uint32_t>(position.hop);
  prov.created_unix_ms = absl::ToUnixMillis(absl::Now());
  prov.quant_policy = policy;
  prov.budget_bits = h.mode == HandoffMode::kCard ? budget.bits : 0;

  const agents::ModelFingerprint& fp = model.fingerprint();
  // Size first (no encoding): refuse over-limit cards before any work.
  cachecard::CountingSink counter;
  absl::StatusOr<cachecard::CardMetadata> sized = cachecard::WriteCard(
      seq.kv_cache(), n, seq.token_ids(), enc, fp.bytes, prov, parent, counter);
  if (sized.ok() && static_cast<int64_t>(counter.card_bytes()) > limits_.max_card_bytes) {
    out.card_fallback_reason =
        absl::StrCat("card would be ", counter.card_bytes(),
                     " bytes, over limits.max_card_bytes = ", limits_.max_card_bytes);
    return out;
  }
  absl::StatusOr<cachecard::shm::CardHandle> card =
      sized.ok() ? store_->Build(seq.kv_cache(), n, seq.token_ids(), enc, fp.bytes, prov, parent)
                 : absl::StatusOr<cachecard::shm::CardHandle>(sized.status());
  if (!card.ok()) {
    out.card_fallback_reason = absl::StrCat("card build failed: ", card.status().ToString());
    spdlog::warn("{}: {}", log_prefix, out.card_fallback_reason);
    return out;
  }
  out.card_build_ms = MsSince(t0);
  const cachecard::CardMetadata& m = (*card)->metadata();
  stats_->Add(Stats::kCardsBuilt);
  stats_->Add(Stats::kCardBytesBuilt, static_cast<int64_t>(m.card_bytes));
  stats_->Observe(Stats::kCardBuildMs, out.card_build_ms);
  stats_->Observe(Stats::kCardBitsPerElement, m.avg_bits);
  out.card = std::move(*card);
  return out;
}

absl::StatusOr<HandedContext> Handoff::Resume(const cachecard::Card& card) const {
  HandedContext c;
  c.handoff.mode = HandoffMode::kFull;  // injected as it is
  QKV_ASSIGN_OR_RETURN(c.card, store_->Get(card.id()));
  c.ids = card.metadata().token_ids;
  c.fingerprint.bytes = card.metadata().fingerprint;
  return c;
}

absl::StatusOr<std::string> Handoff::Keep(Agent& agent, const HandoffConfig& h,
                                          const cachecard::Card* parent, CardPosition position,
                                          absl::Time pinned_until,
                                          const std::string& log_prefix) const {
  HandoffConfig keep = h;
  if (keep.mode == HandoffMode::kReprefill)
    keep.mode = HandoffMode::kFull;  // a kept context is a card
  HandedContext kept = Send(agent, keep, parent, position, log_prefix);
  if (!kept.card) {
    return absl::FailedPreconditionError(
        absl::StrCat("keep_context: no card: ", kept.card_fallback_reason));
  }
  QKV_RETURN_IF_ERROR(store_->Pin(kept.card->id(), pinned_until));
  return kept.card->id().ToHex();
}

absl::StatusOr<Prefixed> Handoff::Prefix(Agent& agent, const std::vector<int32_t>& system_ids,
                                         const std::string& log_prefix) const {
  agents::Sequence& seq = *agent.sequence;
  const agents::ModelFingerprint& fp = agent.model->fingerprint();
  const cachecard::Sha256 digest = cachecard::DigestTokens(system_ids);
  const std::string key = absl::StrCat(fp.Hex(), ":", cachecard::Sha256Hex(digest));
  Prefixed out;
  out.tokens = static_cast<int64_t>(system_ids.size());
  std::optional<cachecard::CardId> known;
  {
    absl::MutexLock lock(&prefix_mu_);
    if (auto it = prefix_cards_.find(key); it != prefix_cards_.end()) known = it->second;
  }
  if (known) {
    absl::Time t = absl::Now();
    absl::StatusOr<cachecard::shm::CardHandle> card = store_->Get(*known, {&fp.bytes, &digest});
    absl::Status s = card.status();
    if (s.ok()) s = cachecard::InjectCard(**card, store_, fp.bytes, &seq.kv_cache());
    if (s.ok()) s = seq.SetTokensAfterInjection(system_ids);
    if (s.ok()) {
      out.inject_ms = MsSince(t);
      out.injected = true;
      out.card = *std::move(card);
      stats_->Add(Stats::kCardsInjected);
      stats_->Observe(Stats::kInjectMs, out.inject_ms);
    } else {
      seq.Reset();
      spdlog::warn("{}: prefix card {} not used, prefilling the system text: {}", log_prefix,
                   known->ToHex(), s.ToString());
    }
  }
  if (!out.injected) {
    absl::Time t = absl::Now();
    QKV_RETURN_IF_ERROR(seq.Append(system_ids, agents::LogitsMode::kNone).status());
    out.prefill_ms = MsSince(t);
    cachecard::Provenance prov;
    prov.source_agent = agent.entry.name;
    prov.created_unix_ms = absl::ToUnixMillis(absl::Now());
    prov.quant_policy = "full";
    t = absl::Now();
    absl::StatusOr<cachecard::shm::CardHandle> card =
        store_->Build(seq.kv_cache(), seq.length(), seq.token_ids(),
                      cachecard::CardEncoding::Full(), fp.bytes, prov, nullptr);
    absl::Status s = card.status();
    if (s.ok()) s = store_->Pin((*card)->id(), absl::InfiniteFuture());
    if (s.ok()) {
      out.card = *std::move(card);
      const cachecard::CardMetadata& m = out.card->metadata();
      stats_->Add(Stats::kCardsBuilt);
      stats_->Add(Stats::kCardBytesBuilt, static_cast<int64_t>(m.card_bytes));
      stats_->Observe(Stats::kCardBuildMs, MsSince(t));
      absl::MutexLock lock(&prefix_mu_);
      prefix_cards_[key] = out.card->id();
    } else {
      spdlog::warn("{}: no prefix card for the system text: {}", log_prefix, s.ToString());
    }
  }
  if (out.card) {
    absl::MutexLock lock(&prefix_mu_);
    agent_prefix_[agent.entry.name] = {out.card->id().ToHex(), out.tokens};
  }
  return out;
}

PrefixCardInfo Handoff::PrefixOf(const std::string& agent_name) const {
  absl::MutexLock lock(&prefix_mu_);
  auto it = agent_prefix_.find(agent_name);
  return it == agent_prefix_.end() ? PrefixCardInfo() : it->second;
}

bool Handoff::IsPrefixCard(const std::string& card_id) const {
  absl::MutexLock lock(&prefix_mu_);
  for (const auto& [key, id] : prefix_cards_)
    if (id.ToHex() == card_id) return true;
  return false;
}

}  // namespace qkvshare::daemon

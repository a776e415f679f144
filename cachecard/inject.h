// File: cachecard/inject.h
// -----------------------------------------------------------------------------
// Injecting a CacheCard (and its parent chain) into an agent's KvCache: the
// receiving side of a handoff. After success the cache holds positions
// [0, T) of the card's context (T = card.metadata().total_tokens()),
// dequantized into the cache's own dtype, and length() == T: ready for decode
// at position T. The card's token ids (metadata().token_ids) are the context.
//
// Transactional: everything that can be checked is validated before the
// first write:
//   1. the parent chain (cachecard/chain.h: NotFound / FailedPrecondition),
//   2. the model fingerprint (FailedPrecondition "fingerprint"),
//   3. the KV shape (FailedPrecondition "shape"),
//   4. every section checksum of every card in the chain (DataLoss),
//   5. capacity: cache->Reserve(T) (OutOfRange "context limit",
//      ResourceExhausted); Reserve keeps the contents when it fails.
// A quantized section whose checksum matches but whose contents are corrupt
// (non-finite group parameters or raw values: a buggy or hostile writer) is
// caught by quant::Dequantize while writing: the positions the cache held
// before are then restored from a copy taken before the first write (none
// is needed for an empty cache) and InvalidArgument "malformed card" is
// returned. On every error the cache keeps its length and the contents of
// positions [0, length()) (positions >= length() are unspecified, as for
// any KvCache).
//
// Cards are read in place and never modified.
//
// Thread safety: reentrant; the caller owns the cache exclusively meanwhile.
//
// Example:
//   CardSet parents;                  // or the shm store's chain
//   parents.Add(hop1_card);
//   QKV_RETURN_IF_ERROR(InjectCard(*hop2_card, &parents, model_fingerprint, &cache));
//   // cache.length() == hop2_card->metadata().total_tokens()
#ifndef QKVSHARE_CACHECARD_INJECT_H_
#define QKVSHARE_CACHECARD_INJECT_H_

#include "absl/status/status.h"
#include "agents/kv_cache.h"
#include "cachecard/card.h"
#include "cachecard/chain.h"
#include "cachecard/ids.h"

namespace qkvshare::cachecard {

// Injects `card` (with its parents found through `parents`, which may be null
// for a self-contained card) into `cache`, built for the model with
// `fingerprint`. Errors: see above; messages start with "inject card <id>: ".
absl::Status InjectCard(const Card& card, const CardResolver* parents,
                        const ModelFingerprint& fingerprint, agents::KvCache* cache);

}  // namespace qkvshare::cachecard

#endif  // QKVSHARE_CACHECARD_INJECT_H_

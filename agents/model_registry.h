// File: agents/model_registry.h
// -----------------------------------------------------------------------------
// ModelRegistry: shares loaded models between agents. Several agents naming
// the same model directory (and compute dtype) get handles to ONE loaded
// weight set; the model is unloaded (unmapped) when the last handle goes.
//
// Handles are std::shared_ptr<const Model> (ModelHandle): the reference count
// is the handle count. The registry itself holds only weak references, so
// handles may outlive it.
//
// Keys: the directory's canonical path (realpath) + the requested compute
// dtype (an unset dtype is its own key "auto", and the model it loads is also
// registered under its resolved dtype) + the other ModelOptions flags
// (decode_kernels, copy_weights_to_huge_pages).
//
// Thread safety: thread-safe. Loads are serialized (a model is loaded once
// even when two agents ask for it at the same time); acquiring an already
// loaded model only takes the lock briefly.
//
// Example:
//   ModelRegistry registry;
//   QKV_ASSIGN_OR_RETURN(ModelHandle a, registry.Acquire("/models/smollm"));
//   QKV_ASSIGN_OR_RETURN(ModelHandle b, registry.Acquire("/models/smollm/"));
//   // a.get() == b.get(); the weights unload after a and b are released.
#ifndef QKVSHARE_AGENTS_MODEL_REGISTRY_H_
#define QKVSHARE_AGENTS_MODEL_REGISTRY_H_

#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "agents/model.h"

namespace qkvshare::agents {

class ModelRegistry {
 public:
  ModelRegistry() = default;
  ModelRegistry(const ModelRegistry&) = delete;
  ModelRegistry& operator=(const ModelRegistry&) = delete;

  // A handle to the model in `dir` with `options`, loading it unless a live
  // handle to it exists. Errors: those of Model::Load (NotFound when `dir`
  // does not exist).
  absl::StatusOr<ModelHandle> Acquire(const std::string& dir, const ModelOptions& options = {})
      ABSL_LOCKS_EXCLUDED(mu_);

  // Models currently loaded (with at least one live handle).
  int num_loaded() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // (canonical directory, dtype name or "auto").
  using Key = std::pair<std::string, std::string>;

  mutable absl::Mutex mu_;
  std::map<Key, std::weak_ptr<const Model>> models_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qkvshare::agents

#endif  // QKVSHARE_AGENTS_MODEL_REGISTRY_H_

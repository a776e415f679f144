#include "agents/model_registry.h"

#include <climits>
#include <cstdlib>
#include <set>

#include "absl/strings/str_cat.h"
#include "agents/file_util.h"
#include "base/cpu_info.h"

namespace qkvshare::agents {
namespace {

// "<dtype or auto>[+torch_decode][+huge_pages][+q8|+q4][+dense]"; "+dense"
// (ModelOptions::dense_weights) only for a GGUF file (`gguf`), the only
// models it changes.
std::string OptionsKey(const std::string& dtype, const ModelOptions& options, bool gguf) {
  std::string quantized;
  if (options.quantized_weights.has_value()) {
    quantized = *options.quantized_weights == weights::BlockFormat::kQ8 ? "+q8" : "+q4";
  }
  return absl::StrCat(dtype, options.decode_kernels ? "" : "+torch_decode",
                      options.copy_weights_to_huge_pages ? "+huge_pages" : "", quantized,
                      gguf && options.dense_weights ? "+dense" : "");
}

std::string DTypeKey(const std::optional<DType>& dtype) {
  return dtype.has_value() ? std::string(DTypeName(*dtype)) : "auto";
}

bool SameFlags(const ModelOptions& a, const ModelOptions& b, bool gguf) {
  return a.decode_kernels == b.decode_kernels &&
         a.copy_weights_to_huge_pages == b.copy_weights_to_huge_pages &&
         a.quantized_weights == b.quantized_weights &&
         (!gguf || a.dense_weights == b.dense_weights);
}

}  // namespace

absl::StatusOr<ModelHandle> ModelRegistry::Acquire(const std::string& dir,
                                                   const ModelOptions& options) {
  char resolved[PATH_MAX];
  if (::realpath(dir.c_str(), resolved) == nullptr) {
    return absl::NotFoundError(absl::StrCat(dir, ": model directory not found"));
  }
  const bool gguf = IsRegularFile(resolved);
  const Key key{resolved, OptionsKey(DTypeKey(options.compute_dtype), options, gguf)};
  absl::MutexLock lock(&mu_);
  auto it = models_.find(key);
  if (it != models_.end()) {
    if (ModelHandle live = it->second.lock()) return live;
  }
  if (!options.compute_dtype.has_value()) {
    // A model of this directory, same flags, with the dtype "auto" would pick.
    for (auto e = models_.lower_bound(Key{resolved, ""});
         e != models_.end() && e->first.first == resolved; ++e) {
      ModelHandle live = e->second.lock();
      if (live == nullptr || !SameFlags(live->options(), options, gguf)) continue;
      const RuntimeDTypes want =
          ResolveRuntimeDTypes(std::nullopt, live->weights_dtype(), CpuHasNativeBf16());
      if (live->compute_dtype() == want.compute && live->memory_weights_dtype() == want.weights) {
        models_[key] = live;
        return live;
      }
    }
  }
  absl::StatusOr<std::unique_ptr<Model>> loaded = Model::Load(dir, options);
  if (!loaded.ok()) return loaded.status();
  ModelHandle handle(std::move(*loaded));
  models_[key] = handle;
  // An explicit request for what this model runs finds it too (not when the
  // CPU rules changed a request: f32 over bf16 weights is not "f32"). The
  // options it runs with, not the request's: a GGUF file under "auto" runs
  // its own format (q8 for Q8_0), which an explicit "f32" (dense) is not.
  if (handle->memory_weights_dtype() == handle->compute_dtype()) {
    models_[Key{resolved, OptionsKey(std::string(DTypeName(handle->compute_dtype())),
                                     handle->options(), gguf)}] = handle;
  }
  // Drop entries of unloaded models.
  for (auto e = models_.begin(); e != models_.end();) {
    e = e->second.expired() ? models_.erase(e) : std::next(e);
  }
  return handle;
}

int ModelRegistry::num_loaded() const {
  absl::MutexLock lock(&mu_);
  std::set<const Model*> live;
  for (const auto& [key, weak] : models_) {
    if (ModelHandle m = weak.lock()) live.insert(m.get());
  }
  return static_cast<int>(live.size());
}

}  // namespace qkvshare::agents

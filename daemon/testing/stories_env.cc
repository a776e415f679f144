#include "daemon/testing/stories_env.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace qkvshare::daemon::testing {

absl::StatusOr<std::unique_ptr<StoriesEnv>> StoriesEnv::Create(int max_new_tokens,
                                                               const std::string& extra_yaml) {
  static std::atomic<int> next{0};
  const std::string model = std::filesystem::absolute("models/stories260K").string();
  const std::string gen = absl::StrCat("{max_new_tokens: ", max_new_tokens, "}");
  const std::string yaml = absl::StrCat(
      "listen: unix:///tmp/unused.sock\nmodels:\n  stories: {path: ", model,
      ", dtype: f32, threads: 1}\nagents:\n  writer: {model: stories, generation: ", gen,
      "}\n  continuer: {model: stories, generation: ", gen,
      "}\n  ender: {model: stories, generation: ", gen, "}\n", extra_yaml);
  auto env = std::make_unique<StoriesEnv>();
  QKV_ASSIGN_OR_RETURN(env->config, ParseDaemonConfig(yaml, "/tmp/stories_env.yaml"));
  QKV_ASSIGN_OR_RETURN(env->pool, AgentPool::Create(env->config));
  cachecard::shm::CardStoreOptions so;
  so.instance = absl::StrCat("envtest", getpid(), "_", next++);
  so.quota_bytes = uint64_t{64} << 20;
  QKV_ASSIGN_OR_RETURN(env->store, cachecard::shm::CardStore::Create(so));
  return env;
}

}  // namespace qkvshare::daemon::testing

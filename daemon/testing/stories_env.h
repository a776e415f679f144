// File: daemon/testing/stories_env.h
// -----------------------------------------------------------------------------
// Test helper for in-process daemon components (handoff, workflow executor):
// an AgentPool on the bundled stories260K model with agents `writer`,
// `continuer` and `ender` (greedy), a private shared-memory CardStore and a
// Stats, without gRPC or a daemon process.
//
// Thread safety: as the components (pool, store and stats are thread-safe).
#ifndef QKVSHARE_DAEMON_TESTING_STORIES_ENV_H_
#define QKVSHARE_DAEMON_TESTING_STORIES_ENV_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cachecard/shm/card_store.h"
#include "daemon/agent_pool.h"
#include "daemon/config/config.h"
#include "daemon/stats.h"

namespace qkvshare::daemon::testing {

struct StoriesEnv {
  // `max_new_tokens` for every agent; `extra_yaml` is appended to the
  // daemon.yaml body (e.g. a `limits:` block). Errors: config or model
  // loading, card store creation.
  static absl::StatusOr<std::unique_ptr<StoriesEnv>> Create(int max_new_tokens,
                                                            const std::string& extra_yaml = "");

  DaemonConfig config;
  Stats stats;
  std::unique_ptr<AgentPool> pool;
  std::unique_ptr<cachecard::shm::CardStore> store;
};

}  // namespace qkvshare::daemon::testing

#endif  // QKVSHARE_DAEMON_TESTING_STORIES_ENV_H_

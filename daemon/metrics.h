// File: daemon/metrics.h
// -----------------------------------------------------------------------------
// Prometheus text metrics for qkvshared (`metrics_listen` in daemon.yaml; off
// when unset). Nothing is counted here: every scrape snapshots daemon/stats.h
// (the single source for GetStats, the shutdown log line and this endpoint)
// and asks the daemon for its current gauges through a callback.
//
// Exported families (all prefixed `qkvshare_`):
//   - one counter per Stats::Counter: `qkvshare_<Stats::Name(c)>_total`;
//   - one histogram per Stats::Distribution: `qkvshare_<Stats::Name(d)>`
//     with `_bucket{le=...}`, `_sum`, `_count` (units in the name: `_ms`,
//     `_tokens_per_second`, `_bits_per_element`);
//   - gauges from MetricsGauges: `qkvshare_queued_tasks`,
//     `qkvshare_running_tasks`, `qkvshare_agents`, `qkvshare_agents_busy`,
//     `qkvshare_store_bytes`, `qkvshare_store_quota_bytes`,
//     `qkvshare_store_cards`, `qkvshare_uptime_seconds`.
// prometheus-cpp's exposer adds its own `exposer_*` families.
//
// Lifecycle: MetricsServer::Start binds and serves at once on its own threads
// (civetweb, 2 threads); the destructor stops serving and joins them. The
// Stats object and whatever the gauges callback reads must outlive the
// server. Thread safety: the callback runs on an HTTP thread, concurrently
// with the daemon; it must be thread-safe and cheap (one call per scrape).
//
// Example:
//   QKV_ASSIGN_OR_RETURN(std::unique_ptr<MetricsServer> metrics,
//                        MetricsServer::Start(cfg.metrics_listen, &stats,
//                                             [&core] { return core.Gauges(); }));
//   spdlog::info("metrics on http://{}/metrics", metrics->address());
#ifndef QKVSHARE_DAEMON_METRICS_H_
#define QKVSHARE_DAEMON_METRICS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "daemon/stats.h"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace qkvshare::daemon {

// Point-in-time values the daemon reports at each scrape.
struct MetricsGauges {
  int64_t queued_tasks = 0;   // tasks waiting for a worker
  int64_t running_tasks = 0;  // tasks running a hop (or a handoff)
  int64_t agents = 0;         // agents hosted
  int64_t agents_busy = 0;    // agents running a hop
  int64_t store_bytes = 0;    // bytes of cards in the shared-memory store
  int64_t store_quota_bytes = 0;
  int64_t store_cards = 0;    // cards in the store
  double uptime_seconds = 0;  // since the daemon started
};

// The Prometheus text exposition (format 0.0.4) of `stats` and `gauges`:
// what a scrape of /metrics returns, minus the exposer's own families.
// Deterministic for a given input (families in a fixed order).
std::string RenderMetricsText(const Stats& stats, const MetricsGauges& gauges);

class MetricsServer {
 public:
  using GaugesFn = std::function<MetricsGauges()>;

  // Serves GET /metrics on `listen` ("127.0.0.1:9464"; "localhost:PORT" is
  // taken as 127.0.0.1; port 0 picks a free port, see port()). IPv4 only
  // (Debian's civetweb build has no IPv6). `stats` must be non-null and
  // outlive the server; an empty `gauges` reports zeros.
  // Errors: InvalidArgument for a malformed address (naming it);
  // Unavailable when the address cannot be bound (in use, not local).
  // Whether the host is loopback is the config's business (allow_remote).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& listen,
                                                              const Stats* stats, GaugesFn gauges);

  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The bound port (the chosen one when `listen` asked for port 0).
  int port() const { return port_; }
  // "host:port" actually bound, e.g. "127.0.0.1:9464".
  std::string address() const;

 private:
  class Collector;
  MetricsServer() = default;

  std::string host_;
  int port_ = 0;
  // prometheus-cpp registers collectables by weak_ptr, hence shared_ptr.
  std::shared_ptr<Collector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace qkvshare::daemon

#endif  // QKVSHARE_DAEMON_METRICS_H_

#include "daemon/metrics.h"

#include <exception>
#include <limits>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"

namespace qkvshare::daemon {

namespace {

constexpr absl::string_view kPrefix = "qkvshare_";

prometheus::MetricFamily Family(std::string name, std::string help, prometheus::MetricType type) {
  prometheus::MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  f.metric.emplace_back();
  return f;
}

void AddGauge(std::vector<prometheus::MetricFamily>* out, absl::string_view name,
              absl::string_view help, double value) {
  prometheus::MetricFamily f =
      Family(absl::StrCat(kPrefix, name), std::string(help), prometheus::MetricType::Gauge);
  f.metric[0].gauge.value = value;
  out->push_back(std::move(f));
}

// Every family, in a fixed order: counters, histograms, gauges.
std::vector<prometheus::MetricFamily> CollectFamilies(const Stats& stats, const MetricsGauges& g) {
  std::vector<prometheus::MetricFamily> out;
  for (int i = 0; i < Stats::kNumCounters; ++i) {
    auto c = static_cast<Stats::Counter>(i);
    prometheus::MetricFamily f =
        Family(absl::StrCat(kPrefix, std::string(Stats::Name(c)), "_total"),
               std::string(Stats::Help(c)), prometheus::MetricType::Counter);
    f.metric[0].counter.value = static_cast<double>(stats.Get(c));
    out.push_back(std::move(f));
  }
  for (int i = 0; i < Stats::kNumDistributions; ++i) {
    auto d = static_cast<Stats::Distribution>(i);
    Stats::Summary s = stats.Summarize(d);
    prometheus::MetricFamily f =
        Family(absl::StrCat(kPrefix, std::string(Stats::Name(d))), std::string(Stats::Help(d)),
               prometheus::MetricType::Histogram);
    prometheus::ClientMetric::Histogram& h = f.metric[0].histogram;
    h.sample_count = static_cast<uint64_t>(s.count);
    h.sample_sum = s.sum;
    // s.cumulative has one entry per bound plus the +Inf bucket last.
    for (size_t b = 0; b < s.cumulative.size(); ++b) {
      prometheus::ClientMetric::Bucket bucket;
      bucket.cumulative_count = static_cast<uint64_t>(s.cumulative[b]);
      bucket.upper_bound =
          b < s.bounds.size() ? s.bounds[b] : std::numeric_limits<double>::infinity();
      h.bucket.push_back(bucket);
    }
    out.push_back(std::move(f));
  }
  AddGauge(&out, "queued_tasks", "Tasks waiting in the queue", g.queued_tasks);
  AddGauge(&out, "running_tasks", "Tasks running", g.running_tasks);
  AddGauge(&out, "agents", "Agents hosted", g.agents);
  AddGauge(&out, "agents_busy", "Agents running a hop", g.agents_busy);
  AddGauge(&out, "store_bytes", "Bytes of CacheCards in the shared-memory store", g.store_bytes);
  AddGauge(&out, "store_quota_bytes", "Quota of the shared-memory card store, bytes",
           g.store_quota_bytes);
  AddGauge(&out, "store_cards", "CacheCards in the shared-memory store", g.store_cards);
  AddGauge(&out, "uptime_seconds", "Seconds since the daemon started", g.uptime_seconds);
  return out;
}

// "host:port" -> (host, port); "localhost" -> 127.0.0.1.
absl::Status ParseListen(const std::string& listen, std::string* host, int* port) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics_listen \"", listen, "\": expected host:port, e.g. 127.0.0.1:9464"));
  }
  *host = listen.substr(0, colon);
  if (*host == "localhost") *host = "127.0.0.1";
  if (!host->empty() && host->front() == '[') {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics_listen \"", listen,
                     "\": IPv6 is not supported by the metrics server; use an "
                     "IPv4 address such as 127.0.0.1"));
  }
  if (!absl::SimpleAtoi(listen.substr(colon + 1), port) || *port < 0 || *port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics_listen \"", listen, "\": port must be a number in [0, 65535]"));
  }
  return absl::OkStatus();
}

}  // namespace

class MetricsServer::Collector : public prometheus::Collectable {
 public:
  Collector(const Stats* stats, GaugesFn gauges) : stats_(stats), gauges_(std::move(gauges)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    MetricsGauges g;
    if (gauges_) g = gauges_();
    return CollectFamilies(*stats_, g);
  }

 private:
  const Stats* stats_;
  GaugesFn gauges_;
};

std::string RenderMetricsText(const Stats& stats, const MetricsGauges& gauges) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, CollectFamilies(stats, gauges));
  return out.str();
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& listen,
                                                                    const Stats* stats,
                                                                    GaugesFn gauges) {
  if (stats == nullptr) return absl::InvalidArgumentError("MetricsServer::Start: stats is null");
  std::string host;
  int port = 0;
  if (absl::Status s = ParseListen(listen, &host, &port); !s.ok()) return s;

  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->host_ = host;
  server->collector_ = std::make_shared<Collector>(stats, std::move(gauges));
  try {
    server->exposer_ =
        std::make_unique<prometheus::Exposer>(absl::StrCat(host, ":", port), /*num_threads=*/2);
  } catch (const std::exception& e) {
    // civetweb reports bind failures only as "null context when constructing
    // CivetServer. Possible problem binding to port."
    return absl::UnavailableError(
        absl::StrCat("metrics_listen \"", listen,
                     "\": cannot listen (address in use or not local): ", e.what()));
  }
  std::vector<int> ports = server->exposer_->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(absl::StrCat("metrics_listen \"", listen, "\": no port bound"));
  }
  server->port_ = ports.front();
  server->exposer_->RegisterCollectable(server->collector_);
  return server;
}

MetricsServer::~MetricsServer() {
  // Stop serving (joins civetweb's threads) before the collector goes away.
  exposer_.reset();
}

std::string MetricsServer::address() const { return absl::StrCat(host_, ":", port_); }

}  // namespace qkvshare::daemon

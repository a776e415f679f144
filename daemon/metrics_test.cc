#include "daemon/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace qkvshare::daemon {
namespace {

// GET /metrics over a plain TCP socket (HTTP/1.0: the server closes after the
// response). Returns the body, or "" with a test failure.
std::string Scrape(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ADD_FAILURE() << "connect to 127.0.0.1:" << port << " failed";
    close(fd);
    return "";
  }
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  EXPECT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  std::string response;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;) response.append(buf, n);
  close(fd);
  EXPECT_EQ(response.rfind("HTTP/1.1 200", 0), 0u) << response.substr(0, 200);
  size_t body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// Sample lines "name{labels} value" -> value, keyed by "name{labels}".
std::map<std::string, double> Samples(const std::string& text) {
  static const std::regex kLine(
      R"re(^([a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})?) (\S+)$)re");
  std::map<std::string, double> out;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (line[0] == '#') {
      EXPECT_TRUE(line.rfind("# HELP qkvshare_", 0) == 0 ||
                  line.rfind("# TYPE qkvshare_", 0) == 0 ||
                  line.find(" exposer_") != absl::string_view::npos)
          << line;
      continue;
    }
    std::cmatch m;
    std::string l(line);
    if (!std::regex_match(l.c_str(), m, kLine)) {
      ADD_FAILURE() << "malformed sample line: " << l;
      continue;
    }
    double v = 0;
    std::string value = m[4].str();
    if (value == "+Inf") {
      v = HUGE_VAL;
    } else {
      EXPECT_TRUE(absl::SimpleAtod(value, &v)) << l;
    }
    out[m[1].str()] = v;
  }
  return out;
}

// Checks the histogram `name` in `text`: le bounds increasing, counts
// non-decreasing, +Inf last and equal to _count. Returns the bucket count.
int CheckHistogram(const std::string& text, const std::string& name) {
  std::regex bucket("^" + name + R"re(_bucket\{le="([^"]+)"\} (\d+)$)re");
  double last_le = -HUGE_VAL;
  int64_t last_count = -1;
  int n = 0;
  std::string last_le_text;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::string l(line);
    std::smatch m;
    if (!std::regex_match(l, m, bucket)) continue;
    double le = 0;
    last_le_text = m[1].str();
    if (last_le_text == "+Inf") {
      le = HUGE_VAL;
    } else {
      EXPECT_TRUE(absl::SimpleAtod(last_le_text, &le)) << l;
    }
    int64_t count = std::stoll(m[2].str());
    EXPECT_GT(le, last_le) << l;
    EXPECT_GE(count, last_count) << l;
    last_le = le;
    last_count = count;
    ++n;
  }
  EXPECT_EQ(last_le_text, "+Inf") << name;
  std::map<std::string, double> s = Samples(text);
  EXPECT_EQ(s[name + "_count"], static_cast<double>(last_count)) << name;
  return n;
}

TEST(MetricsTest, RenderHasEveryStatsFamily) {
  Stats stats;
  stats.Add(Stats::kTasksSubmitted, 3);
  stats.Add(Stats::kCardBytesBuilt, 123456);
  stats.Observe(Stats::kHopTtftMs, 7);
  stats.Observe(Stats::kHopTtftMs, 70);
  stats.Observe(Stats::kHopTtftMs, 1e9);  // lands in +Inf only
  MetricsGauges g;
  g.queued_tasks = 4;
  g.store_bytes = 1 << 20;
  g.agents_busy = 1;
  std::string text = RenderMetricsText(stats, g);
  std::map<std::string, double> s = Samples(text);

  EXPECT_EQ(s["qkvshare_tasks_submitted_total"], 3);
  EXPECT_EQ(s["qkvshare_card_bytes_built_total"], 123456);
  EXPECT_EQ(s["qkvshare_tasks_failed_total"], 0);
  for (int i = 0; i < Stats::kNumCounters; ++i) {
    std::string name =
        "qkvshare_" + std::string(Stats::Name(static_cast<Stats::Counter>(i))) + "_total";
    EXPECT_EQ(s.count(name), 1u) << name;
    EXPECT_NE(text.find("# TYPE " + name + " counter\n"), std::string::npos) << name;
  }
  for (int i = 0; i < Stats::kNumDistributions; ++i) {
    auto d = static_cast<Stats::Distribution>(i);
    std::string name = "qkvshare_" + std::string(Stats::Name(d));
    EXPECT_NE(text.find("# TYPE " + name + " histogram\n"), std::string::npos) << name;
    // One bucket per bound plus +Inf.
    EXPECT_EQ(CheckHistogram(text, name), static_cast<int>(stats.Summarize(d).bounds.size()) + 1);
  }
  // 7 <= 10, 70 <= 100; 1e9 only in +Inf.
  EXPECT_EQ(s["qkvshare_hop_ttft_ms_bucket{le=\"5\"}"], 0);
  EXPECT_EQ(s["qkvshare_hop_ttft_ms_bucket{le=\"10\"}"], 1);
  EXPECT_EQ(s["qkvshare_hop_ttft_ms_bucket{le=\"100\"}"], 2);
  EXPECT_EQ(s["qkvshare_hop_ttft_ms_bucket{le=\"60000\"}"], 2);
  EXPECT_EQ(s["qkvshare_hop_ttft_ms_bucket{le=\"+Inf\"}"], 3);
  EXPECT_EQ(s["qkvshare_hop_ttft_ms_count"], 3);
  EXPECT_DOUBLE_EQ(s["qkvshare_hop_ttft_ms_sum"], 1e9 + 77);

  EXPECT_EQ(s["qkvshare_queued_tasks"], 4);
  EXPECT_EQ(s["qkvshare_store_bytes"], 1 << 20);
  EXPECT_EQ(s["qkvshare_agents_busy"], 1);
  EXPECT_EQ(s["qkvshare_running_tasks"], 0);
  EXPECT_NE(text.find("# TYPE qkvshare_store_cards gauge\n"), std::string::npos);
}

TEST(MetricsTest, ScrapeOverHttpSeesLiveValues) {
  Stats stats;
  std::atomic<int64_t> queued{2};
  std::atomic<int> gauge_calls{0};
  auto server = MetricsServer::Start("127.0.0.1:0", &stats, [&] {
    ++gauge_calls;
    MetricsGauges g;
    g.queued_tasks = queued.load();
    g.store_cards = 5;
    return g;
  });
  ASSERT_TRUE(server.ok()) << server.status();
  int port = (*server)->port();
  ASSERT_GT(port, 0);
  EXPECT_EQ((*server)->address(), "127.0.0.1:" + std::to_string(port));

  std::string first = Scrape(port);
  std::map<std::string, double> a = Samples(first);
  EXPECT_EQ(a["qkvshare_tasks_finished_total"], 0);
  EXPECT_EQ(a["qkvshare_queued_tasks"], 2);
  EXPECT_EQ(a["qkvshare_store_cards"], 5);

  stats.Add(Stats::kTasksFinished, 2);
  stats.Observe(Stats::kDecodeTokensPerS, 150);
  queued = 0;
  std::string second = Scrape(port);
  std::map<std::string, double> b = Samples(second);
  EXPECT_EQ(b["qkvshare_tasks_finished_total"], 2);
  EXPECT_EQ(b["qkvshare_queued_tasks"], 0);
  EXPECT_EQ(b["qkvshare_hop_decode_tokens_per_second_bucket{le=\"100\"}"], 0);
  EXPECT_EQ(b["qkvshare_hop_decode_tokens_per_second_bucket{le=\"200\"}"], 1);
  CheckHistogram(second, "qkvshare_hop_decode_tokens_per_second");
  EXPECT_EQ(gauge_calls.load(), 2);
}

TEST(MetricsTest, BusyPortIsUnavailable) {
  Stats stats;
  auto first = MetricsServer::Start("localhost:0", &stats, nullptr);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second =
      MetricsServer::Start("127.0.0.1:" + std::to_string((*first)->port()), &stats, nullptr);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find(std::to_string((*first)->port())), std::string::npos);
  // Without a gauges callback, gauges read zero.
  EXPECT_EQ(Samples(Scrape((*first)->port()))["qkvshare_agents"], 0);
}

TEST(MetricsTest, MalformedAddressesAreInvalidArgument) {
  Stats stats;
  for (const char* bad :
       {"9464", ":9464", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000", "[::1]:9464"}) {
    auto s = MetricsServer::Start(bad, &stats, nullptr);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.status().message().find(bad), std::string::npos) << s.status();
  }
  EXPECT_EQ(MetricsServer::Start("127.0.0.1:0", nullptr, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qkvshare::daemon

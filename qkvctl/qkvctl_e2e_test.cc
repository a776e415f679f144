// qkvctl against a real qkvshared process (tests/daemon_fixture.h) on the
// bundled stories260K model: the streamed text is the task's output, the
// per-hop table matches GetTask, card export -> rm -> import -> export is
// byte-identical through the daemon's store, errors map to exit codes, and a
// stopped daemon gives exit 2 with one line.
#include <signal.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cachecard/ids.h"
#include "cachecard/testing/golden_card.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "qkvctl/testing/run_qkvctl.h"
#include "qkvctl/testing/short_temp_dir.h"
#include "tests/daemon_fixture.h"

namespace qkvshare::qkvctl {
namespace {

using ::qkvshare::qkvctl::testing::ReadFile;
using ::qkvshare::qkvctl::testing::Result;
using ::qkvshare::qkvctl::testing::ShortTempDir;
using ::qkvshare::testing::DaemonProcess;
using ::testing::HasSubstr;
using ::testing::StartsWith;

class QkvctlE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto d = DaemonProcess::Start(
        DaemonProcess::StoriesConfig(12),
        {{"story.yaml",
          DaemonProcess::StoryWorkflow("story", "{mode: card, bits: 4, policy: adaptive}")}});
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = d->release();
  }
  static void TearDownTestSuite() {
    if (daemon_ != nullptr && daemon_->pid() > 0) daemon_->SignalAndWait(SIGTERM);
    delete daemon_;
    daemon_ = nullptr;
  }

  static Result Run(std::vector<std::string> args) {
    args.insert(args.begin(), {"--addr", daemon_->address()});
    return testing::Run(std::move(args));
  }

  static DaemonProcess* daemon_;
};
DaemonProcess* QkvctlE2eTest::daemon_ = nullptr;

TEST_F(QkvctlE2eTest, StatusAndCatalog) {
  Result s = Run({"status"});
  ASSERT_EQ(s.code, 0) << s.err << daemon_->Log();
  EXPECT_THAT(s.out, HasSubstr("state      serving (pid " + std::to_string(daemon_->pid())));
  EXPECT_THAT(s.out, HasSubstr("agents     3 ("));
  Result a = Run({"agents"});
  ASSERT_EQ(a.code, 0) << a.err;
  for (const char* agent : {"writer", "continuer", "ender"}) EXPECT_THAT(a.out, HasSubstr(agent));
  Result w = Run({"--json", "workflows"});
  ASSERT_EQ(w.code, 0) << w.err;
  nlohmann::json j = nlohmann::json::parse(w.out);
  ASSERT_EQ(j["workflows"].size(), 1u);
  EXPECT_EQ(j["workflows"][0]["hops"].size(), 3u);
  Result r = Run({"reload"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "reloaded 1 workflows: story\n");
}

TEST_F(QkvctlE2eTest, SubmitWaitStreamsTheTaskOutput) {
  Result r = Run({"submit", "story", "--input", "Once upon a time", "--wait"});
  ASSERT_EQ(r.code, 0) << r.err << daemon_->Log();
  ASSERT_THAT(r.out, StartsWith("task "));
  const std::string id = r.out.substr(5, r.out.find('\n') - 5);
  Result g = Run({"--json", "get", id});
  ASSERT_EQ(g.code, 0) << g.err;
  nlohmann::json task = nlohmann::json::parse(g.out);
  EXPECT_EQ(task["state"], "TASK_STATE_FINISHED");
  ASSERT_EQ(task["hops"].size(), 3u);
  // Every hop's output was streamed live, framed by its hop lines.
  for (int h = 0; h < 3; ++h) {
    const nlohmann::json& hop = task["hops"][h];
    std::string agent = hop["agent"];
    std::string header = absl::StrCat("[hop ", h + 1, "/3 ", agent, "]\n");
    size_t at = r.out.find(header);
    ASSERT_NE(at, std::string::npos) << header << r.out;
    size_t text = r.out.find('\n', r.out.find(header) + header.size() - 1) + 1;
    if (h > 0) text = r.out.find('\n', text) + 1;  // the handoff line
    EXPECT_EQ(r.out.substr(text, hop["output"].get<std::string>().size()), hop["output"]) << r.out;
    // The final table row: hop, agent, handoff mode (card after hop 1).
    EXPECT_THAT(r.out, HasSubstr(absl::StrCat("  ", h + 1, "  ", agent)));
  }
  EXPECT_THAT(r.out, HasSubstr("[task " + id + " finished]\n"));
  EXPECT_EQ(task["hops"][1]["handoff_in"]["mode"], "HANDOFF_MODE_CARD");

  Result watch = Run({"watch", id, "--no-tokens"});
  EXPECT_EQ(watch.code, 0) << watch.err;
  EXPECT_THAT(watch.out, HasSubstr("[hop 3/3 ender: "));
}

TEST_F(QkvctlE2eTest, CardExportRemoveImportIsByteIdentical) {
  ASSERT_EQ(Run({"submit", "story", "--input", "Lily went to the park", "--wait"}).code, 0);
  Result ls = Run({"--json", "cards", "ls"});
  ASSERT_EQ(ls.code, 0) << ls.err;
  nlohmann::json cards = nlohmann::json::parse(ls.out)["cards"];
  ASSERT_FALSE(cards.empty()) << ls.out;
  // A leaf card (no child names it as parent) nobody references can be removed.
  std::string leaf;
  for (const auto& c : cards) {
    bool has_child = false;
    for (const auto& o : cards) has_child |= o["parent_id"] == c["id"];
    if (!has_child && c["refs"] == 0) leaf = c["id"];
  }
  ASSERT_FALSE(leaf.empty()) << ls.out;

  ShortTempDir dir;
  const std::string first = dir.File("first.qkvcard"), second = dir.File("second.qkvcard");
  Result e = Run({"cards", "export", leaf, "-o", first});
  ASSERT_EQ(e.code, 0) << e.err;
  Result inspect = Run({"--json", "cards", "inspect", first});
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  nlohmann::json summary = nlohmann::json::parse(inspect.out);
  EXPECT_EQ(summary["parent_id"], "");  // exports are self-contained (flattened)
  bool leaf_has_parent = false;
  for (const auto& c : cards) leaf_has_parent |= c["id"] == leaf && c["parent_id"] != "";
  // Ids are content-derived: a flattened chain is another card than its leaf.
  if (leaf_has_parent) {
    EXPECT_NE(summary["card_id"], leaf);
  } else {
    EXPECT_EQ(summary["card_id"], leaf);
  }

  Result rm = Run({"cards", "rm", leaf});
  ASSERT_EQ(rm.code, 0) << rm.err;
  EXPECT_EQ(Run({"cards", "inspect", leaf}).code, 3);
  Result imp = Run({"--json", "cards", "import", first});
  ASSERT_EQ(imp.code, 0) << imp.err;
  EXPECT_EQ(imp.err, "");  // a card of the hosted model: no warning
  EXPECT_FALSE(nlohmann::json::parse(imp.out).value("foreign_model", false)) << imp.out;
  const std::string imported = nlohmann::json::parse(imp.out)["id"];
  ASSERT_EQ(Run({"cards", "export", imported, "-o", second}).code, 0);
  EXPECT_TRUE(ReadFile(first) == ReadFile(second)) << "re-exported card differs";
  EXPECT_EQ(imported, summary["card_id"]);
  // Importing the same card again is fine: the stored card, not a second copy.
  Result again = Run({"--json", "cards", "import", first});
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(nlohmann::json::parse(again.out)["id"], imported);
  // A truncated card is the client's bad input: INVALID_ARGUMENT, exit 4.
  const std::string truncated = dir.File("truncated.qkvcard");
  {
    const std::string bytes = ReadFile(first);
    std::ofstream(truncated, std::ios::binary) << bytes.substr(0, bytes.size() - 100);
  }
  Result bad = Run({"cards", "import", truncated});
  EXPECT_EQ(bad.code, 4) << bad.err;
  EXPECT_THAT(bad.err, HasSubstr("not a valid card"));
  EXPECT_THAT(bad.err, HasSubstr("INVALID_ARGUMENT"));
}

// A card for a model no agent here runs is stored, with a warning naming its
// fingerprint (qkvctl stderr, JSON `warnings`, the daemon log once), and
// `cards ls` marks it.
TEST_F(QkvctlE2eTest, ForeignCardImportWarns) {
  const std::string file =
      qkvshare::testing::Runfile("cachecard/testdata/" + cachecard::testing::GoldenFileName());
  const std::string fingerprint =
      cachecard::FingerprintHex(cachecard::testing::GoldenFingerprint());
  const std::string id = cachecard::testing::GoldenCardId().ToHex();
  Result imp = Run({"cards", "import", file});
  ASSERT_EQ(imp.code, 0) << imp.err;
  EXPECT_THAT(imp.out, StartsWith("imported card " + id));
  EXPECT_THAT(imp.err, StartsWith("qkvctl: warning: card " + id + " is for model fingerprint " +
                                  fingerprint + "; no hosted model matches (hosted: stories "));
  EXPECT_EQ(std::count(imp.err.begin(), imp.err.end(), '\n'), 1) << imp.err;

  Result ls = Run({"cards", "ls"});
  ASSERT_EQ(ls.code, 0) << ls.err;
  EXPECT_THAT(ls.out, HasSubstr("\n" + id + "* "));
  EXPECT_THAT(ls.out, HasSubstr("* for a model no agent here runs (foreign fingerprint)\n"));
  Result json = Run({"--json", "cards", "inspect", id});
  ASSERT_EQ(json.code, 0) << json.err;
  EXPECT_EQ(nlohmann::json::parse(json.out)["foreign_model"], true);

  // Logged once, at the import (not on every listing).
  const std::string log = daemon_->Log();
  size_t count = 0;
  for (size_t pos = log.find(fingerprint); pos != std::string::npos;
       pos = log.find(fingerprint, pos + 1)) {
    ++count;
  }
  EXPECT_EQ(count, 1u) << log;
  EXPECT_THAT(log, HasSubstr("import: card " + id + " is for model fingerprint"));

  ASSERT_EQ(Run({"--json", "cards", "rm", id}).code, 0);
  Result again = Run({"--json", "cards", "import", file});
  ASSERT_EQ(again.code, 0) << again.err;
  nlohmann::json j = nlohmann::json::parse(again.out);
  EXPECT_EQ(j["foreign_model"], true);
  ASSERT_EQ(j["warnings"].size(), 1u) << again.out;
  EXPECT_THAT(j["warnings"][0].get<std::string>(), HasSubstr(fingerprint));
  EXPECT_THAT(again.err, HasSubstr("qkvctl: warning: card " + id));
  ASSERT_EQ(Run({"cards", "rm", id}).code, 0);
}

TEST_F(QkvctlE2eTest, ErrorsMapToExitCodes) {
  Result unknown = Run({"submit", "nope", "--input", "x"});
  EXPECT_EQ(unknown.code, 3) << unknown.err;
  EXPECT_THAT(unknown.err, StartsWith("qkvctl: submit nope: "));
  Result bits = Run({"submit", "story", "--input", "x", "--bits", "9"});
  EXPECT_EQ(bits.code, 4) << bits.err;
  EXPECT_EQ(Run({"get", "t-does-not-exist"}).code, 3);
  EXPECT_EQ(Run({"cards", "rm", "00000000000000000000000000000000"}).code, 3);
  Result stats = Run({"--json", "stats"});
  ASSERT_EQ(stats.code, 0);
  EXPECT_GE(std::stoll(nlohmann::json::parse(stats.out)["tasks_rejected"].get<std::string>()), 2);
}

// Last (gtest runs tests in declaration order): stops the daemon.
TEST_F(QkvctlE2eTest, ZStoppedDaemonIsOneLineExitTwo) {
  ASSERT_EQ(daemon_->SignalAndWait(SIGTERM), 0) << daemon_->Log();
  Result r = Run({"status"});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_THAT(r.err, StartsWith("qkvctl: cannot connect to " + daemon_->address() +
                                ": no daemon is listening ("));
}

}  // namespace
}  // namespace qkvshare::qkvctl

// qkvctl end to end against an in-process fake daemon (qkvctl/testing/):
// human tables, --json, exit codes, submit --wait streaming, card
// export/import byte identity, daemon down.
#include "qkvctl/cli.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "qkvctl/testing/fake_daemon.h"
#include "qkvctl/testing/run_qkvctl.h"
#include "qkvctl/testing/short_temp_dir.h"

namespace qkvshare::qkvctl {
namespace {

using ::qkvshare::qkvctl::testing::FakeDaemon;
using ::qkvshare::qkvctl::testing::ReadFile;
using ::qkvshare::qkvctl::testing::Result;
using ::qkvshare::qkvctl::testing::ShortTempDir;
using ::testing::HasSubstr;
using ::testing::StartsWith;

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

int CountLines(const std::string& s) {
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    unsetenv("QKVSHARE_ADDR");
    auto d = FakeDaemon::Start();
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = *std::move(d);
  }

  // qkvctl --addr <fake> args...
  Result Run(std::vector<std::string> args) {
    args.insert(args.begin(), {"--addr", daemon_->address()});
    return testing::Run(std::move(args));
  }

  std::unique_ptr<FakeDaemon> daemon_;
};

TEST_F(CliTest, StatusTable) {
  Result r = Run({"status"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out,
            "version    0.1.0-fake\n"
            "state      serving (pid 4242)\n"
            "listen     unix:///run/qkvshare/qkvshared.sock\n"
            "tcp        -\n"
            "metrics    http://127.0.0.1:9464/metrics\n"
            "instance   default\n"
            "uptime     1h 02m\n"
            "agents     4 (1 busy)\n"
            "workflows  2\n"
            "tasks      1 running, 2 queued of 16\n"
            "store      2 cards, 3.0 MiB of 256.0 MiB (1.2%)\n");
}

TEST_F(CliTest, StatusJsonAfterTheSubcommand) {
  Result r = Run({"status", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["version"], "0.1.0-fake");
  EXPECT_EQ(j["uptime_ms"], "3723000");  // proto3 JSON: int64 as a string
  EXPECT_EQ(j["agents"], 4);
  EXPECT_EQ(j["state"], "serving");
  EXPECT_EQ(j["store_cards"], 2);
}

TEST_F(CliTest, AgentsAndWorkflows) {
  Result a = Run({"agents"});
  ASSERT_EQ(a.code, 0) << a.err;
  std::vector<std::string> lines = absl::StrSplit(a.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 5u) << a.out;
  EXPECT_THAT(lines[0], StartsWith("NAME       MODEL    DTYPE  STATE  KV CACHE  WEIGHTS"));
  EXPECT_THAT(lines[1], StartsWith("writer     stories  f32    busy    1.0 MiB  1.0 MiB  "));
  EXPECT_THAT(lines[4], HasSubstr("stranger   other"));
  EXPECT_THAT(lines[4], HasSubstr("bbbbbbbbbbbb"));

  Result aj = Run({"--json", "agents"});
  ASSERT_EQ(aj.code, 0);
  nlohmann::json j = nlohmann::json::parse(aj.out);
  ASSERT_EQ(j["agents"].size(), 4u);
  EXPECT_EQ(j["agents"][1]["name"], "continuer");
  EXPECT_EQ(j["agents"][1]["kv_cache_bytes"], "1048576");

  Result w = Run({"workflows"});
  ASSERT_EQ(w.code, 0) << w.err;
  EXPECT_EQ(w.out,
            "NAME   HOPS  AGENTS                  HANDOFF                            "
            "DESCRIPTION\n"
            "story     3  writer>continuer>ender  card/4b/adaptive,card/4b/adaptive  "
            "writer -> continuer -> ender, 4-bit adaptive cards\n"
            "pair      2  writer>stranger         default                            "
            "writer -> stranger (falls back to re-prefill)\n");
}

TEST_F(CliTest, SubmitSendsOverridesAndPrintsTheId) {
  Result r =
      Run({"submit", "story", "--input", "Once upon", "--bits", "3", "--mode", "card", "--policy",
           "uniform", "--max-new-tokens", "20", "--deadline-ms", "5000", "--label", "smoke"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "t-000002\n");
  FakeDaemon::State s = daemon_->Snapshot();
  ASSERT_EQ(s.submitted.size(), 1u);
  const v1::SubmitTaskRequest& req = s.submitted[0];
  EXPECT_EQ(req.workflow(), "story");
  EXPECT_EQ(req.input(), "Once upon");
  EXPECT_EQ(req.handoff_override().mode(), v1::HANDOFF_MODE_CARD);
  EXPECT_EQ(req.handoff_override().policy(), v1::BIT_POLICY_UNIFORM);
  ASSERT_TRUE(req.handoff_override().has_bits());
  EXPECT_EQ(req.handoff_override().bits(), 3.0);
  EXPECT_EQ(req.generation_override().max_new_tokens(), 20);
  EXPECT_EQ(req.deadline_ms(), 5000);
  EXPECT_EQ(req.label(), "smoke");

  // Unset flags stay unset (the workflow's values apply).
  ASSERT_EQ(Run({"submit", "pair", "--input", "x"}).code, 0);
  const v1::SubmitTaskRequest& plain = daemon_->Snapshot().submitted[1];
  EXPECT_FALSE(plain.handoff_override().has_bits());
  EXPECT_EQ(plain.handoff_override().mode(), v1::HANDOFF_MODE_UNSPECIFIED);
  EXPECT_FALSE(plain.generation_override().has_max_new_tokens());
}

TEST_F(CliTest, SubmitWaitStreamsTokensThenThePerHopTable) {
  Result r = Run({"submit", "story", "--input", "Once upon a time", "--wait"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_THAT(r.out, StartsWith("task t-000002\n"
                                "[hop 1/3 writer]\n"
                                "Once upon a time there was a cat.\n"
                                "[card 01cafe000000: 18 tokens, 12.1 KiB, 4.02 bits, built in "
                                "1.2 ms]\n"
                                "[hop 1/3 writer: 8 tokens, 250.0 tok/s, TTFT 4.5 ms, stop "
                                "max_new_tokens]\n"
                                "[hop 2/3 continuer]\n"
                                "[handoff to hop 2: card, 12.1 KiB, injected in 0.8 ms]\n"
                                "Once upon a time there was a cat.\n"));
  EXPECT_THAT(r.out, HasSubstr("[task t-000002 finished]\n\n"
                               "HOP  AGENT      HANDOFF  CARD BYTES  AVG BITS  INJECT MS  "
                               "TTFT MS  TOKENS  TOK/S  STOP\n"
                               "  1  writer     -                 -         -          -      "
                               "4.5       8  250.0  max_new_tokens\n"
                               "  2  continuer  card       12.1 KiB      4.02        0.8      "
                               "5.5       8  240.0  max_new_tokens\n"
                               "  3  ender      card       24.1 KiB      4.02        0.8      "
                               "6.5       8  230.0  max_new_tokens\n"));
}

TEST_F(CliTest, SubmitWaitMarksFallbacks) {
  Result r = Run({"submit", "pair", "--input", "x", "--wait"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("[handoff to hop 2: reprefill, re-prefilled 18 tokens (card "
                               "requested: fingerprint mismatch: agent stranger runs another "
                               "model)]\n"));
  EXPECT_THAT(r.out, HasSubstr("  2  stranger  reprefill*"));
  EXPECT_THAT(r.out, HasSubstr("* hop 2: card requested, fell back: fingerprint mismatch"));
}

TEST_F(CliTest, SubmitWaitExitsOneWhenTheTaskFailsOrIsCancelled) {
  daemon_->Update([](FakeDaemon::State& s) { s.next_outcome = v1::TASK_STATE_FAILED; });
  Result failed = Run({"submit", "story", "--input", "x", "--wait"});
  EXPECT_EQ(failed.code, 1);
  EXPECT_EQ(failed.err, "");
  EXPECT_THAT(failed.out,
              HasSubstr("Once upon\n[task t-000002 failed: hop 3 (ender): agent error: out of "
                        "memory]\n"));
  // The two hops that finished are in the table.
  EXPECT_THAT(failed.out, HasSubstr("  2  continuer  card"));
  EXPECT_THAT(failed.out, ::testing::Not(HasSubstr("  3  ender")));

  daemon_->Update([](FakeDaemon::State& s) { s.next_outcome = v1::TASK_STATE_CANCELLED; });
  Result cancelled = Run({"submit", "story", "--input", "x", "--wait"});
  EXPECT_EQ(cancelled.code, 1);
  EXPECT_THAT(cancelled.out, HasSubstr("[task t-000003 cancelled: cancelled by client]"));
}

TEST_F(CliTest, SubmitWaitJsonIsOneEventPerLine) {
  Result r = Run({"--json", "submit", "story", "--input", "x", "--wait"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::vector<std::string> lines = absl::StrSplit(r.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), daemon_->Snapshot().events["t-000002"].size());
  for (size_t i = 0; i < lines.size(); ++i) {
    nlohmann::json j = nlohmann::json::parse(lines[i]);
    EXPECT_EQ(j["seq"], std::to_string(i));
    EXPECT_EQ(j["task_id"], "t-000002");
  }
  nlohmann::json last = nlohmann::json::parse(lines.back());
  EXPECT_EQ(last["finished"]["state"], "TASK_STATE_FINISHED");
  EXPECT_EQ(last["finished"]["output"], "Once upon a time there was a cat.");
  EXPECT_EQ(nlohmann::json::parse(lines[2])["token"]["text"], "Once");

  Result id = Run({"submit", "story", "--input", "x", "--json"});
  ASSERT_EQ(id.code, 0);
  EXPECT_EQ(nlohmann::json::parse(id.out)["task_id"], "t-000003");
}

TEST_F(CliTest, SubmitInputFile) {
  ShortTempDir dir;
  std::string path = dir.File("input.txt");
  std::ofstream(path) << "Lily and Tom\nwent to the park.\n";
  Result r = Run({"submit", "story", "--input-file", path});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(daemon_->Snapshot().submitted.at(0).input(), "Lily and Tom\nwent to the park.\n");

  Result missing = Run({"submit", "story", "--input-file", dir.File("nope.txt")});
  EXPECT_EQ(missing.code, 2);
  EXPECT_EQ(missing.err, "qkvctl: submit: cannot read " + dir.File("nope.txt") +
                             ": No such file or directory\n");
  EXPECT_EQ(daemon_->Snapshot().submitted.size(), 1u);

  std::string latin1 = dir.File("latin1.txt");
  std::ofstream(latin1) << "caf\xe9 au lait";
  Result bad = Run({"submit", "story", "--input-file", latin1});
  EXPECT_EQ(bad.code, 2);
  EXPECT_EQ(bad.err, "qkvctl: submit: the input is not valid UTF-8 (byte offset 3)\n");
  EXPECT_EQ(daemon_->Snapshot().submitted.size(), 1u);  // nothing sent
}

TEST_F(CliTest, NumericFlagsSayWhatTheyWant) {
  Result zero = Run({"submit", "story", "--input", "x", "--max-new-tokens", "0"});
  EXPECT_EQ(zero.code, 2);
  EXPECT_THAT(zero.err, HasSubstr("--max-new-tokens: must be a number > 0, got '0'"));
  Result negative = Run({"tasks", "--limit", "-1"});
  EXPECT_EQ(negative.code, 2);
  EXPECT_THAT(negative.err, HasSubstr("--limit: must be a number >= 0, got '-1'"));
  EXPECT_TRUE(daemon_->Snapshot().submitted.empty());
}

TEST_F(CliTest, SubmitErrorsMapToExitCodes) {
  Result unknown = Run({"submit", "nope", "--input", "x"});
  EXPECT_EQ(unknown.code, 3);
  EXPECT_EQ(unknown.err, "qkvctl: submit nope: unknown workflow \"nope\" (NOT_FOUND)\n");
  EXPECT_EQ(unknown.out, "");

  Result bits = Run({"submit", "story", "--input", "x", "--bits", "9"});
  EXPECT_EQ(bits.code, 4);
  EXPECT_EQ(bits.err,
            "qkvctl: submit story: handoff bits 9 must be in [2, 8] or exactly 16 "
            "(INVALID_ARGUMENT)\n");

  daemon_->Update([](FakeDaemon::State& s) {
    s.submit_error = absl::ResourceExhaustedError("queue full (16 tasks waiting)");
  });
  Result full = Run({"submit", "story", "--input", "x"});
  EXPECT_EQ(full.code, 4);
  EXPECT_THAT(full.err, HasSubstr("queue full (16 tasks waiting) (RESOURCE_EXHAUSTED)"));

  daemon_->Update(
      [](FakeDaemon::State& s) { s.submit_error = absl::UnavailableError("shutting down"); });
  Result draining = Run({"submit", "story", "--input", "x"});
  EXPECT_EQ(draining.code, 2);
  EXPECT_EQ(draining.err,
            "qkvctl: daemon at " + daemon_->address() + " is unavailable: shutting down\n");

  daemon_->Update([](FakeDaemon::State& s) { s.submit_error = absl::InternalError("boom"); });
  EXPECT_EQ(Run({"submit", "story", "--input", "x"}).code, 5);
}

TEST_F(CliTest, UsageErrorsExitTwoWithoutContactingTheDaemon) {
  EXPECT_EQ(Run({"submit", "story"}).code, 2);  // no input
  Result both = Run({"submit", "story", "--input", "x", "--input-file", "/etc/hostname"});
  EXPECT_EQ(both.code, 2);
  EXPECT_EQ(Run({"submit", "story", "--input", "x", "--mode", "zip"}).code, 2);
  EXPECT_EQ(Run({"submit", "story", "--input", "x", "--bits", "four"}).code, 2);
  EXPECT_EQ(Run({"frobnicate"}).code, 2);
  EXPECT_EQ(Run({}).code, 2);
  EXPECT_EQ(Run({"cards"}).code, 2);
  EXPECT_EQ(Run({"cards", "export", "c1"}).code, 2);  // -o missing
  EXPECT_TRUE(daemon_->Snapshot().submitted.empty());
}

TEST_F(CliTest, HelpListsCommandsAndExitCodes) {
  Result r = testing::Run({"--help"});
  EXPECT_EQ(r.code, 0);
  for (const char* s :
       {"status", "agents", "workflows", "submit", "watch", "tasks", "get", "cancel", "cards",
        "stats", "reload", "QKVSHARE_ADDR", "Exit codes:", "  3  not found"}) {
    EXPECT_THAT(r.out, HasSubstr(s));
  }
  Result version = testing::Run({"--version"});
  EXPECT_EQ(version.code, 0);
  EXPECT_THAT(version.out, StartsWith("qkvctl 0."));
  Result sub = testing::Run({"submit", "--help"});
  EXPECT_EQ(sub.code, 0);
  EXPECT_THAT(sub.out, HasSubstr("--max-new-tokens"));
}

TEST_F(CliTest, WatchReplaysATask) {
  Result r = Run({"watch", "t-000001"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("[hop 1/3 writer]\nOnce upon a time there was a cat.\n"));
  EXPECT_THAT(r.out, HasSubstr("[task t-000001 finished]\n"));
  EXPECT_THAT(r.out, HasSubstr("  3  ender      card       24.1 KiB"));

  // Resuming mid-task without tokens: no text, the table comes from GetTask.
  Result tail = Run({"watch", "t-000001", "--from-seq", "12", "--no-tokens"});
  ASSERT_EQ(tail.code, 0) << tail.err;
  EXPECT_THAT(tail.out, ::testing::Not(HasSubstr("cat.")));
  EXPECT_THAT(tail.out, HasSubstr("  1  writer"));
  EXPECT_THAT(tail.out, HasSubstr("  3  ender"));

  Result unknown = Run({"watch", "t-999"});
  EXPECT_EQ(unknown.code, 3);
  EXPECT_EQ(unknown.err, "qkvctl: watch t-999: unknown task t-999 (NOT_FOUND)\n");
}

TEST_F(CliTest, TasksGetCancel) {
  ASSERT_EQ(Run({"submit", "story", "--input", "x", "--label", "nightly"}).code, 0);
  Result t = Run({"tasks"});
  ASSERT_EQ(t.code, 0) << t.err;
  std::vector<std::string> lines = absl::StrSplit(t.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u) << t.out;
  EXPECT_THAT(lines[0], StartsWith("ID        STATE     WORKFLOW  LABEL    HOPS"));
  EXPECT_THAT(lines[1], StartsWith("t-000002  finished  story     nightly   3/3"));
  EXPECT_THAT(lines[2], StartsWith("t-000001  finished  story               3/3"));
  Result limited = Run({"tasks", "--limit", "1", "--json"});
  ASSERT_EQ(limited.code, 0);
  EXPECT_EQ(nlohmann::json::parse(limited.out)["tasks"].size(), 1u);

  Result g = Run({"get", "t-000001"});
  ASSERT_EQ(g.code, 0) << g.err;
  EXPECT_THAT(g.out, StartsWith("id        t-000001\n"
                                "state     finished\n"
                                "workflow  story\n"
                                "hops      3/3 done\n"));
  EXPECT_THAT(g.out, HasSubstr("\noutput:\nOnce upon a time there was a cat.\n"));
  EXPECT_EQ(Run({"get", "t-404"}).code, 3);

  Result ended = Run({"cancel", "t-000001"});
  ASSERT_EQ(ended.code, 0);
  EXPECT_EQ(ended.out, "task t-000001 is finished (already ended; nothing to cancel)\n");
  daemon_->Update([](FakeDaemon::State& s) { s.tasks[0].set_state(v1::TASK_STATE_RUNNING); });
  Result running = Run({"cancel", "t-000002"});
  ASSERT_EQ(running.code, 0);
  EXPECT_EQ(running.out, "task t-000002 cancelled\n");
  EXPECT_EQ(daemon_->Snapshot().cancelled.size(), 2u);
  EXPECT_EQ(Run({"cancel", "t-404"}).code, 3);
}

TEST_F(CliTest, CardsListAndInspect) {
  Result ls = Run({"cards", "ls"});
  ASSERT_EQ(ls.code, 0) << ls.err;
  std::vector<std::string> lines = absl::StrSplit(ls.out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 4u) << ls.out;
  EXPECT_THAT(lines[0], StartsWith("ID  PARENT  HOP  AGENT      TOKENS  CONTEXT      BYTES"));
  EXPECT_THAT(lines[1], StartsWith("c1  -         1  writer         18       18  293.0 KiB"));
  EXPECT_THAT(lines[2], StartsWith("c2  c1        2  continuer      18       36    4.0 KiB"));
  EXPECT_EQ(lines[3], "2 cards, 3.0 MiB of 256.0 MiB (1.2%)");

  Result inspect = Run({"cards", "inspect", "c1"});
  ASSERT_EQ(inspect.code, 0) << inspect.err;
  EXPECT_THAT(inspect.out, StartsWith("id           c1\n"
                                      "parent       -\n"
                                      "fingerprint  aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                      "aaaaaaaaaaaaaaaaaaaa\n"));
  EXPECT_THAT(inspect.out, HasSubstr("LAYER  K BYTES  V BYTES\n"
                                     "    0     1000     2000\n"));
  EXPECT_THAT(inspect.out, HasSubstr("BITS  K TOKENS  V TOKENS\n"
                                     "   2         0         2\n"
                                     "   4        12        16\n"
                                     "   8         6         0\n"));
  Result json = Run({"cards", "inspect", "c2", "--json"});
  ASSERT_EQ(json.code, 0);
  EXPECT_EQ(nlohmann::json::parse(json.out)["parent_id"], "c1");
  EXPECT_EQ(Run({"cards", "inspect", "nope"}).code, 3);
}

TEST_F(CliTest, ExportImportIsByteIdentical) {
  ShortTempDir dir;
  std::string file = dir.File("c1.qkvcard");
  Result e = Run({"cards", "export", "c1", "-o", file});
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_EQ(e.out, "exported card c1 to " + file + " (293.0 KiB)\n");
  const std::string original = daemon_->Snapshot().cards.at("c1").bytes;
  ASSERT_EQ(original.size(), 300000u);
  EXPECT_TRUE(ReadFile(file) == original);
  EXPECT_FALSE(Exists(file + ".partial"));

  Result i = Run({"cards", "import", file});
  ASSERT_EQ(i.code, 0) << i.err;
  EXPECT_EQ(i.out, "imported card imported-1 (293.0 KiB, 18 tokens)\n");
  EXPECT_TRUE(daemon_->Snapshot().cards.at("imported-1").bytes == original);

  Result ej = Run({"--json", "cards", "export", "c2", "-o", dir.File("c2.qkvcard")});
  ASSERT_EQ(ej.code, 0);
  nlohmann::json j = nlohmann::json::parse(ej.out);
  EXPECT_EQ(j["bytes"], 4096);
  EXPECT_EQ(j["id"], "c2");

  // Unknown card: exit 3 and no file left behind.
  Result missing = Run({"cards", "export", "nope", "-o", dir.File("nope.qkvcard")});
  EXPECT_EQ(missing.code, 3);
  EXPECT_EQ(missing.err, "qkvctl: cards export nope: unknown card nope (NOT_FOUND)\n");
  EXPECT_FALSE(Exists(dir.File("nope.qkvcard")));
  EXPECT_FALSE(Exists(dir.File("nope.qkvcard.partial")));
  // Unwritable destination: local error, exit 2.
  EXPECT_EQ(Run({"cards", "export", "c1", "-o", dir.File("no/such/dir.qkvcard")}).code, 2);

  // An empty file is rejected by the daemon (4); a missing one never leaves (2).
  std::ofstream(dir.File("empty.qkvcard")).close();
  Result empty = Run({"cards", "import", dir.File("empty.qkvcard")});
  EXPECT_EQ(empty.code, 4);
  EXPECT_THAT(empty.err, HasSubstr("card file is empty"));
  EXPECT_EQ(Run({"cards", "import", dir.File("absent.qkvcard")}).code, 2);
}

TEST_F(CliTest, CardsRemove) {
  Result parent = Run({"cards", "rm", "c1"});
  EXPECT_EQ(parent.code, 4);
  EXPECT_EQ(parent.err,
            "qkvctl: cards rm c1: card c1 is the parent of card c2 (FAILED_PRECONDITION)\n");
  Result ok = Run({"cards", "rm", "c2"});
  EXPECT_EQ(ok.code, 0) << ok.err;
  EXPECT_EQ(ok.out, "removed card c2\n");
  EXPECT_EQ(Run({"cards", "rm", "c2"}).code, 3);
  EXPECT_EQ(daemon_->Snapshot().deleted, std::vector<std::string>{"c2"});
}

TEST_F(CliTest, StatsAndReload) {
  Result s = Run({"stats"});
  ASSERT_EQ(s.code, 0) << s.err;
  EXPECT_THAT(s.out, HasSubstr("tasks_submitted          7\n"));
  EXPECT_THAT(s.out, HasSubstr("hop_ttft_ms             15   5.2  0.0  0.0  9.5  0.0\n"));
  Result sj = Run({"stats", "--json"});
  ASSERT_EQ(sj.code, 0);
  EXPECT_EQ(nlohmann::json::parse(sj.out)["tokens_generated"], "1234");

  Result r = Run({"reload"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "reloaded 2 workflows: pair, story\n");
  daemon_->Update([](FakeDaemon::State& st) {
    st.reload_error = absl::InvalidArgumentError("workflows/story.yaml:3:5: hops: unknown agent");
  });
  Result bad = Run({"reload"});
  EXPECT_EQ(bad.code, 4);
  EXPECT_EQ(bad.err,
            "qkvctl: reload: workflows/story.yaml:3:5: hops: unknown agent (INVALID_ARGUMENT)\n");
}

TEST_F(CliTest, DaemonDownIsOneLineAndExitTwo) {
  const std::string address = daemon_->address();
  daemon_->Shutdown();
  for (const char* cmd : {"status", "tasks", "stats"}) {
    Result r = Run({cmd});
    EXPECT_EQ(r.code, 2) << cmd;
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(CountLines(r.err), 1) << r.err;
    EXPECT_THAT(r.err,
                StartsWith("qkvctl: cannot connect to " + address + ": no daemon is listening ("));
    EXPECT_THAT(r.err, HasSubstr("is qkvshared running?)\n"));
  }
  Result sub = Run({"submit", "story", "--input", "x", "--wait"});
  EXPECT_EQ(sub.code, 2);
  EXPECT_EQ(CountLines(sub.err), 1) << sub.err;
}

TEST_F(CliTest, AddressFromEnvironmentUnlessFlagGiven) {
  ShortTempDir dir;
  setenv("QKVSHARE_ADDR", ("unix://" + dir.File("env.sock")).c_str(), 1);
  Result env = testing::Run({"status"});
  EXPECT_EQ(env.code, 2);
  EXPECT_THAT(env.err, HasSubstr("cannot connect to unix://" + dir.File("env.sock")));
  Result flag = Run({"status"});  // --addr wins over the environment
  EXPECT_EQ(flag.code, 0) << flag.err;
  unsetenv("QKVSHARE_ADDR");
}

TEST_F(CliTest, InspectCardFileLocally) {
  const std::string golden = "cachecard/testdata/golden_v2.qkvcard";
  daemon_->Shutdown();  // a file needs no daemon
  Result r = Run({"cards", "inspect", golden});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("file: " + golden + " (checksums verified)\ncard: "));
  EXPECT_THAT(r.out, HasSubstr("kv shape: 5 layers, 4 kv heads, head_dim 8"));

  Result j = Run({"--json", "cards", "inspect", golden});
  ASSERT_EQ(j.code, 0) << j.err;
  nlohmann::json s = nlohmann::json::parse(j.out);
  EXPECT_EQ(s["total_tokens"], 8);
  EXPECT_EQ(s["shape"]["num_layers"], 5);
  EXPECT_EQ(s["card_id"].get<std::string>().size(), 32u);
  EXPECT_EQ(s["parent_id"], "");
  EXPECT_EQ(s["provenance"]["source_agent"], "writer");
  EXPECT_EQ(s["layer_bytes"].size(), 5u);
  // Segment 0 quantized (K widths 2, 3, 4, 8, 16), segment 1 three fp32 tokens.
  EXPECT_EQ(s["k_bits_histogram"],
            nlohmann::json({{"2", 1}, {"3", 1}, {"4", 1}, {"8", 1}, {"16", 1}, {"32", 3}}));
  EXPECT_EQ(s["segments"][1]["mode"], "full");

  // One flipped byte in a section: the checksum catches it, exit 4, one line.
  ShortTempDir dir;
  std::string bytes = ReadFile(golden);
  bytes[bytes.size() - 100] ^= 0x40;
  std::ofstream(dir.File("bad.qkvcard"), std::ios::binary) << bytes;
  Result bad = Run({"cards", "inspect", dir.File("bad.qkvcard")});
  EXPECT_EQ(bad.code, 4);
  EXPECT_EQ(CountLines(bad.err), 1) << bad.err;
  EXPECT_THAT(bad.err, StartsWith("qkvctl: cards inspect " + dir.File("bad.qkvcard") +
                                  ": invalid card file: "));
}

}  // namespace
}  // namespace qkvshare::qkvctl

// End-to-end tests of qkvshared: a real daemon process on the bundled
// stories260K model, driven through its gRPC API.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agents/testing/random_llama.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/daemon_fixture.h"

namespace qkvshare {
namespace {

using ::qkvshare::testing::DaemonProcess;
using ::qkvshare::testing::Runfile;
using ::testing::HasSubstr;

constexpr char kInput[] = "Once upon a time, there was a little girl named Lily.";

v1::SubmitTaskRequest Submit(const std::string& workflow, const std::string& input = kInput) {
  v1::SubmitTaskRequest r;
  r.set_workflow(workflow);
  r.set_input(input);
  return r;
}

grpc::StatusCode SubmitCode(DaemonProcess& d, const v1::SubmitTaskRequest& r,
                            std::string* message = nullptr) {
  grpc::ClientContext ctx;
  v1::SubmitTaskResponse resp;
  grpc::Status s = d.tasks().SubmitTask(&ctx, r, &resp);
  if (message) *message = s.error_message();
  return s.error_code();
}

class StoryDaemonTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto d = DaemonProcess::Start(
        DaemonProcess::StoriesConfig(40, "limits: {max_concurrent_tasks: 2, queue_length: 4}\n"),
        {{"full.yaml", DaemonProcess::StoryWorkflow("story_full", "{mode: full}")},
         {"reprefill.yaml", DaemonProcess::StoryWorkflow("story_reprefill", "{mode: reprefill}")},
         {"card4.yaml", DaemonProcess::StoryWorkflow("story_card4", "{mode: card, bits: 4}")},
         {"card16.yaml", DaemonProcess::StoryWorkflow("story_card16", "{mode: card, bits: 16}")}});
    ASSERT_TRUE(d.ok()) << d.status();
    daemon_ = d->release();
  }
  static void TearDownTestSuite() {
    if (daemon_ != nullptr) {
      EXPECT_EQ(daemon_->SignalAndWait(SIGTERM), 0) << daemon_->Log();
    }
    delete daemon_;
    daemon_ = nullptr;
  }
  static DaemonProcess* daemon_;
};
DaemonProcess* StoryDaemonTest::daemon_ = nullptr;

// With `full` cards every hop continues from exactly the KV cache re-prefill
// would compute: outputs are identical token for token (greedy).
TEST_F(StoryDaemonTest, FullCardHandoffEqualsReprefill) {
  auto full = daemon_->RunTask(Submit("story_full"));
  auto re = daemon_->RunTask(Submit("story_reprefill"));
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_TRUE(re.ok()) << re.status();
  ASSERT_EQ(full->state(), v1::TASK_STATE_FINISHED) << full->reason();
  ASSERT_EQ(re->state(), v1::TASK_STATE_FINISHED) << re->reason();
  ASSERT_EQ(full->hops_size(), 3);
  ASSERT_EQ(re->hops_size(), 3);
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(full->hops(k).output(), re->hops(k).output()) << "hop " << k;
    EXPECT_GT(full->hops(k).generated_tokens(), 0);
  }
  for (int k = 1; k < 3; ++k) {
    const v1::HandoffStats& h = full->hops(k).handoff_in();
    EXPECT_EQ(h.mode(), v1::HANDOFF_MODE_FULL);
    EXPECT_TRUE(h.fallback_reason().empty()) << h.fallback_reason();
    EXPECT_GT(h.card_bytes(), 0);
    EXPECT_EQ(re->hops(k).handoff_in().mode(), v1::HANDOFF_MODE_REPREFILL);
    EXPECT_EQ(re->hops(k).handoff_in().reprefill_tokens(), h.context_tokens());
  }
  // The second card extends the first: it carries only the new tokens.
  EXPECT_LT(full->hops(2).handoff_in().card_tokens(), full->hops(2).handoff_in().context_tokens());
  EXPECT_EQ(full->output(), full->hops(2).output());
}

// A 4-bit adaptive card of the same context is at most 0.35x the 16-bit one.
TEST_F(StoryDaemonTest, FourBitCardIsSmall) {
  auto c4 = daemon_->RunTask(Submit("story_card4"));
  auto c16 = daemon_->RunTask(Submit("story_card16"));
  ASSERT_TRUE(c4.ok() && c16.ok());
  ASSERT_EQ(c4->state(), v1::TASK_STATE_FINISHED) << c4->reason();
  ASSERT_EQ(c16->state(), v1::TASK_STATE_FINISHED) << c16->reason();
  // Hop 0 runs before any handoff, so hop 1 receives the same context.
  EXPECT_EQ(c4->hops(0).output(), c16->hops(0).output());
  const v1::HandoffStats& h4 = c4->hops(1).handoff_in();
  const v1::HandoffStats& h16 = c16->hops(1).handoff_in();
  ASSERT_EQ(h4.mode(), v1::HANDOFF_MODE_CARD);
  ASSERT_EQ(h4.context_tokens(), h16.context_tokens());
  EXPECT_NEAR(h4.avg_bits(), 4.0, 0.05);
  EXPECT_EQ(h16.avg_bits(), 16.0);
  EXPECT_LE(h4.card_bytes(), 0.35 * h16.card_bytes())
      << h4.card_bytes() << " vs " << h16.card_bytes();
  EXPECT_GT(h4.inject_ms(), 0);
}

TEST_F(StoryDaemonTest, StatusCodes) {
  std::string msg;
  EXPECT_EQ(SubmitCode(*daemon_, Submit("no_such_workflow"), &msg), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(msg, HasSubstr("unknown workflow 'no_such_workflow'"));
  v1::SubmitTaskRequest inline_req;
  inline_req.set_input("x");
  inline_req.mutable_inline_()->add_hops()->set_agent("ghost");
  EXPECT_EQ(SubmitCode(*daemon_, inline_req, &msg), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(msg, HasSubstr("unknown agent 'ghost'"));
  std::string long_input;
  for (int i = 0; i < 300; ++i) long_input += "Lily saw a dog. ";
  EXPECT_EQ(SubmitCode(*daemon_, Submit("story_full", long_input), &msg),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(msg, HasSubstr("context limit of 512 tokens"));
  EXPECT_EQ(SubmitCode(*daemon_, Submit("story", ""), &msg), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(msg, HasSubstr("input is empty"));
  v1::SubmitTaskRequest labelled = Submit("story");
  labelled.set_label(std::string(257, 'x'));
  EXPECT_EQ(SubmitCode(*daemon_, labelled, &msg), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(msg, HasSubstr("label is 257 bytes; at most 256"));
  v1::SubmitTaskRequest many;
  many.set_input("x");
  for (int i = 0; i < 257; ++i) many.mutable_inline_()->add_hops()->set_agent("writer");
  EXPECT_EQ(SubmitCode(*daemon_, many, &msg), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(msg, HasSubstr("inline pipeline has 257 hops; at most 256"));
  grpc::ClientContext ctx;
  v1::GetTaskRequest g;
  g.set_task_id("t-nope");
  v1::Task t;
  EXPECT_EQ(daemon_->tasks().GetTask(&ctx, g, &t).error_code(), grpc::StatusCode::NOT_FOUND);
}

// Issue 18 items 1, 3, 4: hostile requests are rejected quickly with
// INVALID_ARGUMENT naming the field, and client strings cannot forge log
// lines.
TEST_F(StoryDaemonTest, HostileRequestsAreRejectedCheaply) {
  std::string msg;
  // Unknown enum values are not "unset".
  v1::SubmitTaskRequest mode = Submit("story_card4");
  mode.mutable_handoff_override()->set_mode(static_cast<v1::HandoffMode>(99));
  EXPECT_EQ(SubmitCode(*daemon_, mode, &msg), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(msg, HasSubstr("handoff_override.mode: unknown HandoffMode value 99"));
  v1::SubmitTaskRequest policy = Submit("story_card4");
  policy.mutable_handoff_override()->set_policy(static_cast<v1::BitPolicy>(77));
  EXPECT_EQ(SubmitCode(*daemon_, policy, &msg), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(msg, HasSubstr("handoff_override.policy: unknown BitPolicy value 77"));
  v1::SubmitTaskRequest hop_mode;
  hop_mode.set_input("x");
  for (int i = 0; i < 2; ++i) hop_mode.mutable_inline_()->add_hops()->set_agent("writer");
  hop_mode.mutable_inline_()->mutable_hops(1)->mutable_handoff()->set_mode(
      static_cast<v1::HandoffMode>(-5));
  EXPECT_EQ(SubmitCode(*daemon_, hop_mode, &msg), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(msg, HasSubstr("inline.hops[2].handoff.mode: unknown HandoffMode value -5"));

  // A template bomb: {input} x 8000 of a ~1 MiB input (8 GiB expanded).
  v1::SubmitTaskRequest bomb;
  bomb.set_input(std::string((1 << 20) - 16, 'a'));
  v1::HopSpec* h = bomb.mutable_inline_()->add_hops();
  h->set_agent("writer");
  for (int i = 0; i < 8000; ++i) *h->mutable_instruction() += "{input}";
  absl::Time t0 = absl::Now();
  EXPECT_EQ(SubmitCode(*daemon_, bomb, &msg), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(1));
  EXPECT_THAT(msg, HasSubstr("{input} x8000"));
  EXPECT_THAT(msg, HasSubstr("limits.max_input_bytes is 1048576"));

  // A long input within max_input_bytes is tokenized only as far as the
  // context limit needs.
  std::string long_input;
  while (long_input.size() < 1000000) long_input += "Lily saw a dog. ";
  t0 = absl::Now();
  EXPECT_EQ(SubmitCode(*daemon_, Submit("story_card4", long_input), &msg),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(2));
  EXPECT_THAT(msg, HasSubstr("more than 512 tokens"));

  // A name with a newline cannot forge a log line.
  EXPECT_EQ(SubmitCode(*daemon_, Submit("w\n[critical] forged"), &msg),
            grpc::StatusCode::NOT_FOUND);
  absl::SleepFor(absl::Milliseconds(100));  // the log line is written after the reply
  const std::string log = daemon_->Log();
  EXPECT_THAT(log, HasSubstr("task rejected (w\\n[critical] forged)"));
  EXPECT_THAT(log, ::testing::Not(HasSubstr("\n[critical] forged")));
}

// A free loopback TCP port (bound and released).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

// Issue 18 item 6: the TCP listener wants the bearer token (UNAUTHENTICATED
// without it or with another), the Unix socket does not.
TEST(DaemonTcpTest, TcpNeedsTheBearerToken) {
  char tmpl[] = "/tmp/qkvtokXXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string token_file = std::string(tmpl) + "/token";
  const std::string token = "s3cret-token-0123456789";
  std::ofstream(token_file) << token << "\n";
  ASSERT_EQ(chmod(token_file.c_str(), 0600), 0);
  const int port = FreePort();
  ASSERT_GT(port, 0);
  const std::string tcp = absl::StrCat("127.0.0.1:", port);
  auto d = DaemonProcess::Start(
      DaemonProcess::StoriesConfig(
          8, absl::StrCat("tcp_listen: ", tcp, "\ntcp_auth_token_file: ", token_file, "\n")),
      {});
  ASSERT_TRUE(d.ok()) << d.status();
  auto channel = grpc::CreateChannel(tcp, grpc::experimental::LocalCredentials(LOCAL_TCP));
  auto admin = v1::AdminService::NewStub(channel);
  auto call = [&](const std::string& authorization) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!authorization.empty()) ctx.AddMetadata("authorization", authorization);
    v1::Status status;
    return admin->GetStatus(&ctx, v1::GetStatusRequest(), &status);
  };
  grpc::Status none = call("");
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED) << none.error_message();
  EXPECT_THAT(none.error_message(), HasSubstr("Bearer"));
  EXPECT_EQ(call("Bearer wrong-token-0123456789").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::Status ok = call("Bearer " + token);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  // The Unix socket needs no token.
  grpc::ClientContext ctx;
  v1::Status status;
  EXPECT_TRUE((*d)->admin().GetStatus(&ctx, v1::GetStatusRequest(), &status).ok());
  EXPECT_EQ((*d)->SignalAndWait(SIGTERM), 0) << (*d)->Log();
  std::filesystem::remove_all(tmpl);
}

// A hop whose instruction does not fit its agent's context fails the task
// with a reason naming the hop; the next task runs normally.
TEST_F(StoryDaemonTest, HopOverContextLimitFailsTheTaskWithAReason) {
  v1::SubmitTaskRequest r;
  r.set_input("Tom had a red ball.");
  v1::HopSpec* h0 = r.mutable_inline_()->add_hops();
  h0->set_agent("writer");
  h0->set_instruction("{input}");
  v1::HopSpec* h1 = r.mutable_inline_()->add_hops();
  h1->set_agent("continuer");
  std::string huge;
  for (int i = 0; i < 200; ++i) huge += " The dog ran home.";
  h1->set_instruction(huge);
  auto t = daemon_->RunTask(r);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->state(), v1::TASK_STATE_FAILED);
  EXPECT_THAT(t->reason(), HasSubstr("hop 2/2 (continuer)"));
  EXPECT_THAT(t->reason(), HasSubstr("context limit of 512 tokens"));
  EXPECT_EQ(t->hops_size(), 1);  // the first hop finished and is reported
  auto ok = daemon_->RunTask(Submit("story_card4"));
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->state(), v1::TASK_STATE_FINISHED);
}

// Each stop reason on a one-hop task that produces it (greedy stories260K):
// the enum and its text twin agree.
TEST_F(StoryDaemonTest, EachStopReasonOnACaseThatProducesIt) {
  struct Case {
    std::string input;
    int max_new_tokens;
    std::vector<std::string> stop;
    v1::StopReason want;
    const char* text;
  };
  std::string near_full;  // 506 tokens: the 512-token context fills first
  for (int i = 0; i < 56; ++i) near_full += "The dog ran home. ";
  const Case kCases[] = {
      {"Tom had a red ball.", 400, {}, v1::STOP_REASON_STOP_TOKEN, "stop_token"},
      {"Tom had a red ball.", 5, {}, v1::STOP_REASON_MAX_NEW_TOKENS, "max_new_tokens"},
      {"Tom had a red ball.", 400, {"."}, v1::STOP_REASON_STOP_STRING, "stop_string"},
      {near_full, 400, {}, v1::STOP_REASON_CONTEXT_FULL, "context_full"},
  };
  for (const Case& c : kCases) {
    v1::SubmitTaskRequest r;
    r.set_input(c.input);
    v1::HopSpec* h = r.mutable_inline_()->add_hops();
    h->set_agent("writer");
    h->set_instruction("{input}");
    h->mutable_generation()->set_max_new_tokens(c.max_new_tokens);
    for (const std::string& s : c.stop) h->mutable_generation()->add_stop(s);
    auto t = daemon_->RunTask(r);
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_EQ(t->state(), v1::TASK_STATE_FINISHED) << t->reason();
    ASSERT_EQ(t->hops_size(), 1);
    const v1::HopResult& hop = t->hops(0);
    EXPECT_EQ(hop.stop(), c.want) << c.text << ": " << hop.stop_reason();
    EXPECT_EQ(hop.stop_reason(), c.text);
    if (c.want == v1::STOP_REASON_MAX_NEW_TOKENS) {
      EXPECT_EQ(hop.generated_tokens(), 5);
    }
    if (c.want == v1::STOP_REASON_STOP_STRING) {
      EXPECT_EQ(hop.output().find('.'), std::string::npos);
    }
    if (c.want == v1::STOP_REASON_CONTEXT_FULL) {
      EXPECT_GE(hop.prefill_tokens() + hop.generated_tokens(), 512) << hop.prefill_tokens();
    }
  }
}

std::vector<std::string> WorkflowNames(DaemonProcess& d) {
  grpc::ClientContext ctx;
  v1::ListWorkflowsResponse resp;
  EXPECT_TRUE(d.catalog().ListWorkflows(&ctx, v1::ListWorkflowsRequest(), &resp).ok());
  std::vector<std::string> names;
  for (const v1::WorkflowInfo& w : resp.workflows()) names.push_back(w.name());
  return names;
}

// SIGHUP and ReloadWorkflows re-read the workflow files; a broken file keeps
// the old set and the error names the file and key.
TEST_F(StoryDaemonTest, ReloadWorkflows) {
  const std::string extra = daemon_->workflows_dir() + "/zz_extra.yaml";
  std::ofstream(extra) << DaemonProcess::StoryWorkflow("extra", "{mode: full}");
  kill(daemon_->pid(), SIGHUP);
  bool seen = false;
  for (int i = 0; i < 100 && !seen; ++i) {
    std::vector<std::string> names = WorkflowNames(*daemon_);
    seen = std::find(names.begin(), names.end(), "extra") != names.end();
    if (!seen) absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(seen);

  std::ofstream(extra) << "name: extra\nhops:\n  - {agent: writer, colour: red}\n";
  grpc::ClientContext ctx;
  v1::ReloadWorkflowsResponse resp;
  grpc::Status s = daemon_->catalog().ReloadWorkflows(&ctx, v1::ReloadWorkflowsRequest(), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("zz_extra.yaml:3:"));
  EXPECT_THAT(s.error_message(), HasSubstr("hops[0].colour: unknown key"));
  EXPECT_EQ(WorkflowNames(*daemon_).size(), 5u);  // the previous set stays

  // Invalid UTF-8 in an instruction: refused at reload with the location;
  // the previous set stays and still lists (a proto3 string needs UTF-8).
  std::ofstream(extra, std::ios::trunc)
      << "name: extra\nhops:\n  - {agent: writer, instruction: \"\xff\xfe\"}\n";
  grpc::ClientContext ctx_utf8;
  s = daemon_->catalog().ReloadWorkflows(&ctx_utf8, v1::ReloadWorkflowsRequest(), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(),
              HasSubstr("zz_extra.yaml:3:34: hops[0].instruction: text is not valid UTF-8"));
  const std::vector<std::string> kept = WorkflowNames(*daemon_);
  EXPECT_EQ(kept.size(), 5u);
  EXPECT_NE(std::find(kept.begin(), kept.end(), "extra"), kept.end());

  std::filesystem::remove(extra);
  grpc::ClientContext ctx2;
  ASSERT_TRUE(daemon_->catalog().ReloadWorkflows(&ctx2, v1::ReloadWorkflowsRequest(), &resp).ok());
  EXPECT_EQ(resp.workflows_size(), 4);
}

// A daemon with one worker and a queue of one: the third task is refused;
// cancelling the running task ends it CANCELLED, with the event.
TEST(DaemonSchedulingTest, QueueFullAndCancel) {
  auto d = DaemonProcess::Start(
      DaemonProcess::StoriesConfig(200, "limits: {max_concurrent_tasks: 1, queue_length: 1}\n"),
      {{"long.yaml", DaemonProcess::StoryWorkflow("long", "{mode: reprefill}")}});
  ASSERT_TRUE(d.ok()) << d.status();
  std::vector<std::string> ids;
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext ctx;
    v1::SubmitTaskResponse resp;
    ASSERT_TRUE((*d)->tasks().SubmitTask(&ctx, Submit("long", "Tom"), &resp).ok());
    ids.push_back(resp.task_id());
  }
  std::string msg;
  EXPECT_EQ(SubmitCode(**d, Submit("long", "Tom")), grpc::StatusCode::RESOURCE_EXHAUSTED);

  // Wait for the first task's first token, then cancel it.
  grpc::ClientContext wctx;
  v1::WatchTaskRequest w;
  w.set_task_id(ids[0]);
  auto reader = (*d)->tasks().WatchTask(&wctx, w);
  v1::TaskEvent ev;
  while (reader->Read(&ev) && !ev.has_token()) {
  }
  ASSERT_TRUE(ev.has_token());
  grpc::ClientContext cctx;
  v1::CancelTaskRequest c;
  c.set_task_id(ids[0]);
  v1::Task after;
  ASSERT_TRUE((*d)->tasks().CancelTask(&cctx, c, &after).ok());
  bool cancelled_event = false;
  while (reader->Read(&ev)) cancelled_event |= ev.has_cancelled();
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(cancelled_event);
  grpc::ClientContext gctx;
  v1::GetTaskRequest g;
  g.set_task_id(ids[0]);
  v1::Task t;
  ASSERT_TRUE((*d)->tasks().GetTask(&gctx, g, &t).ok());
  EXPECT_EQ(t.state(), v1::TASK_STATE_CANCELLED);
  EXPECT_EQ(t.reason(), "cancelled by client");
  // The queued task then runs; SIGTERM while it runs: exit 0, and a watcher
  // sees it end FINISHED (within the grace period) or CANCELLED.
  grpc::ClientContext w2ctx;
  v1::WatchTaskRequest w2;
  w2.set_task_id(ids[1]);
  auto reader2 = (*d)->tasks().WatchTask(&w2ctx, w2);
  while (reader2->Read(&ev) && !ev.has_token()) {
  }
  std::thread term([&] { EXPECT_EQ((*d)->SignalAndWait(SIGTERM), 0) << (*d)->Log(); });
  v1::TaskState final_state = v1::TASK_STATE_UNSPECIFIED;
  while (reader2->Read(&ev)) {
    if (ev.has_finished()) final_state = v1::TASK_STATE_FINISHED;
    if (ev.has_cancelled()) final_state = v1::TASK_STATE_CANCELLED;
  }
  term.join();
  EXPECT_TRUE(final_state == v1::TASK_STATE_FINISHED || final_state == v1::TASK_STATE_CANCELLED)
      << (*d)->Log();
}

// A watcher that goes away mid-stream does not disturb the task; a second
// watcher sees its end.
TEST_F(StoryDaemonTest, WatcherDisconnectDoesNotDisturbTask) {
  grpc::ClientContext sctx;
  v1::SubmitTaskResponse resp;
  ASSERT_TRUE(daemon_->tasks().SubmitTask(&sctx, Submit("story_card4"), &resp).ok());
  {
    grpc::ClientContext wctx;
    v1::WatchTaskRequest w;
    w.set_task_id(resp.task_id());
    auto reader = daemon_->tasks().WatchTask(&wctx, w);
    v1::TaskEvent ev;
    int n = 0;
    while (n < 3 && reader->Read(&ev)) ++n;
    wctx.TryCancel();
  }
  grpc::ClientContext w2ctx;
  v1::WatchTaskRequest w2;
  w2.set_task_id(resp.task_id());
  auto reader2 = daemon_->tasks().WatchTask(&w2ctx, w2);
  v1::TaskEvent ev;
  int64_t last_seq = -1;
  bool finished = false;
  while (reader2->Read(&ev)) {
    EXPECT_EQ(ev.seq(), last_seq + 1);  // a full, ordered replay
    last_seq = ev.seq();
    finished |= ev.has_finished();
  }
  EXPECT_TRUE(reader2->Finish().ok());
  EXPECT_TRUE(finished);
}

// models.NAME.min_card_bits raises a lower card budget; the receiving hop's
// handoff stats and the log say so. Other budgets are untouched.
TEST(DaemonCardBudgetTest, MinCardBitsRaisesLowBudgets) {
  std::string config = DaemonProcess::StoriesConfig(12);
  const std::string model_line = "dtype: f32, threads: 1}";
  ASSERT_NE(config.find(model_line), std::string::npos) << config;
  config.replace(config.find(model_line), model_line.size(),
                 "dtype: f32, threads: 1, min_card_bits: 4}");
  auto d = DaemonProcess::Start(
      config, {{"low.yaml", DaemonProcess::StoryWorkflow("low", "{mode: card, bits: 2}")},
               {"high.yaml", DaemonProcess::StoryWorkflow("high", "{mode: card, bits: 6}")}});
  ASSERT_TRUE(d.ok()) << d.status();
  auto low = (*d)->RunTask(Submit("low"));
  auto high = (*d)->RunTask(Submit("high"));
  ASSERT_TRUE(low.ok() && high.ok());
  ASSERT_EQ(low->state(), v1::TASK_STATE_FINISHED) << low->reason();
  ASSERT_EQ(high->state(), v1::TASK_STATE_FINISHED) << high->reason();
  for (int k = 1; k < 3; ++k) {
    const v1::HandoffStats& h = low->hops(k).handoff_in();
    EXPECT_EQ(h.mode(), v1::HANDOFF_MODE_CARD);
    EXPECT_NEAR(h.avg_bits(), 4.0, 0.05) << "hop " << k;
    EXPECT_EQ(h.budget_reason(), "bits 2 raised to 4 (models.stories.min_card_bits)");
    const v1::HandoffStats& h6 = high->hops(k).handoff_in();
    EXPECT_NEAR(h6.avg_bits(), 6.0, 0.05) << "hop " << k;
    EXPECT_EQ(h6.budget_reason(), "");
  }
  EXPECT_THAT((*d)->Log(),
              HasSubstr("card budget bits 2 raised to 4 (models.stories.min_card_bits)"));
}

// Two agents on different models: the card cannot serve, the hop falls back
// to re-prefill of the text and the handoff event says why.
TEST(DaemonFallbackTest, MismatchedModelFallsBackToReprefill) {
  agents::testing::RandomLlamaSpec spec;
  spec.vocab = 512;
  spec.max_pos = 512;
  spec.eos_ids = {2};
  spec.tokenizer_json_path = Runfile("models/stories260K/tokenizer.json");
  const std::string other = agents::testing::TempDir("other_model");
  ASSERT_TRUE(agents::testing::WriteRandomLlama(other, spec).ok());
  auto d = DaemonProcess::Start(absl::StrCat(R"(
models:
  stories: {path: )",
                                             Runfile("models/stories260K"), R"(}
  other: {path: )",
                                             other, R"(}
agents:
  writer: {model: stories, generation: {max_new_tokens: 16}}
  stranger: {model: other, generation: {max_new_tokens: 8}}
)"),
                                {{"mixed.yaml", R"(
name: mixed
hops:
  - {agent: writer, instruction: "{input}", handoff: {mode: card, bits: 4}}
  - {agent: stranger, instruction: "Then"}
)"}});
  ASSERT_TRUE(d.ok()) << d.status();
  auto t = (*d)->RunTask(Submit("mixed"));
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->state(), v1::TASK_STATE_FINISHED) << t->reason();
  const v1::HandoffStats& h = t->hops(1).handoff_in();
  EXPECT_EQ(h.requested_mode(), v1::HANDOFF_MODE_CARD);
  EXPECT_EQ(h.mode(), v1::HANDOFF_MODE_REPREFILL);
  EXPECT_THAT(h.fallback_reason(), HasSubstr("fingerprint mismatch"));
  EXPECT_GT(h.reprefill_tokens(), 0);
  EXPECT_EQ(h.inject_ms(), 0);
}

}  // namespace
}  // namespace qkvshare

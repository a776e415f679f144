// Graph workflows (steps:): parsing and every load-time error, with its
// file:line:col and key path.
#include <string>

#include "daemon/config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::daemon {
namespace {

using ::testing::HasSubstr;

DaemonConfig Daemon() {
  auto cfg = ParseDaemonConfig(R"(
models:
  m: {path: /models/x}
agents:
  a: {model: m}
  b: {model: m}
  c: {model: m}
)",
                               "/etc/q/daemon.yaml");
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  return *cfg;
}

absl::StatusOr<WorkflowConfig> Parse(const std::string& yaml) {
  return ParseWorkflow(yaml, "/w/g.yaml", Daemon());
}

std::string Error(const std::string& yaml) { return std::string(Parse(yaml).status().message()); }

TEST(GraphConfigTest, ParsesStepsRoutesParallelAndAwait) {
  auto wf = Parse(R"yaml(
max_steps: 12
steps:
  write:
    agent: a
    instruction: "{input}"
    max_visits: 3
    next: review
  review:
    agent: b
    instruction: "Review {previous} ({visit})"
    max_visits: 3
    on_limit: experts
    routes:
      - {contains: "good", to: experts}
      - {regex: "^ *bad", to: write}
      - {equals: "stop", to: end}
    default: write
  experts:
    parallel:
      x: {agent: a, instruction: "X says"}
      y: {agent: b, instruction: "Y says"}
    join: ask
    max_visits: 2
  ask:
    agent: c
    instruction: "{branches} {branch.y}"
    next: wait
    max_visits: 2
  wait:
    await_input: "Approve?"
    max_visits: 2
    routes:
      - {contains: "yes", to: end}
    default: write
)yaml");
  ASSERT_TRUE(wf.ok()) << wf.status();
  EXPECT_TRUE(wf->is_graph());
  EXPECT_TRUE(wf->hops.empty());
  EXPECT_EQ(wf->max_steps, 12);
  ASSERT_EQ(wf->steps.size(), 5u);
  const StepConfig& review = wf->steps[1];
  EXPECT_EQ(review.name, "review");
  ASSERT_EQ(review.routes.size(), 3u);
  EXPECT_EQ(review.routes[1].test, RouteConfig::Test::kRegex);
  EXPECT_EQ(review.routes[2].to, "end");
  EXPECT_EQ(review.default_to, "write");
  EXPECT_EQ(review.max_visits, 3);
  EXPECT_EQ(review.on_limit, "experts");
  EXPECT_EQ(review.routes[0].where, "/w/g.yaml:15:32: steps.review.routes[0].to");
  const StepConfig& experts = wf->steps[2];
  ASSERT_EQ(experts.parallel.size(), 2u);
  EXPECT_EQ(experts.parallel[0].name, "x");
  EXPECT_EQ(experts.parallel[1].agent, "b");
  EXPECT_EQ(experts.join, "ask");
  ASSERT_TRUE(wf->steps[4].await_input.has_value());
  EXPECT_EQ(*wf->steps[4].await_input, "Approve?");
  EXPECT_EQ(wf->FindStep("ask"), &wf->steps[3]);
  EXPECT_EQ(wf->FindStep("nope"), nullptr);
}

TEST(GraphConfigTest, RouteTests) {
  RouteConfig r;
  r.pattern = "cat";
  EXPECT_TRUE(RouteMatches(r, "the cat sat"));
  EXPECT_FALSE(RouteMatches(r, "the dog"));
  r.test = RouteConfig::Test::kEquals;
  EXPECT_TRUE(RouteMatches(r, "  cat\n"));
  EXPECT_FALSE(RouteMatches(r, "cats"));
  r.test = RouteConfig::Test::kRegex;
  r.pattern = "c[a-z]t\\b";
  EXPECT_TRUE(RouteMatches(r, "a cot."));
  EXPECT_FALSE(RouteMatches(r, "a cots"));
}

TEST(GraphConfigTest, UnknownStepInARoute) {
  EXPECT_EQ(Error(R"(steps:
  s1:
    agent: a
    routes:
      - {contains: x, to: s9}
    default: end
)"),
            "/w/g.yaml:5:27: steps.s1.routes[0].to: unknown step 's9' (steps: s1, or end)");
  EXPECT_THAT(Error("steps:\n  s1: {agent: a, next: nowhere}\n"),
              HasSubstr("/w/g.yaml:2:24: steps.s1.next: unknown step 'nowhere'"));
}

TEST(GraphConfigTest, UnreachableStep) {
  EXPECT_EQ(Error(R"(steps:
  s1: {agent: a, next: end}
  s2: {agent: b}
)"),
            "/w/g.yaml:3:7: steps.s2: step 's2' is unreachable from the first step 's1'");
}

TEST(GraphConfigTest, CycleWithoutMaxVisits) {
  EXPECT_EQ(Error(R"(steps:
  s1: {agent: a, next: s2, max_visits: 2}
  s2:
    agent: b
    routes: [{contains: ok, to: end}]
    default: s1
)"),
            "/w/g.yaml:4:5: steps.s2: step 's2' is on a cycle and needs max_visits: N (the "
            "loop's bound)");
  // A self-loop is a cycle too.
  EXPECT_THAT(Error("steps:\n  s1: {agent: a, next: s1}\n"),
              HasSubstr("steps.s1: step 's1' is on a cycle and needs max_visits"));
}

TEST(GraphConfigTest, MissingDefault) {
  EXPECT_EQ(Error(R"(steps:
  s1:
    agent: a
    routes:
      - {contains: x, to: end}
)"),
            "/w/g.yaml:5:7: steps.s1.routes: routes need a default: (the step taken when no "
            "route matches)");
}

TEST(GraphConfigTest, TwoBranchesOnOneAgent) {
  EXPECT_EQ(Error(R"(steps:
  s1: {agent: a, next: fan}
  fan:
    parallel:
      p: {agent: b}
      q: {agent: b}
    join: s2
  s2: {agent: c}
)"),
            "/w/g.yaml:6:18: steps.fan.parallel.q.agent: agent 'b' already runs branch 'p' of "
            "this parallel step; branches run at the same time, so each needs its own agent");
}

TEST(GraphConfigTest, OtherMistakes) {
  // Bad regex, at its key.
  EXPECT_THAT(Error("steps:\n  s1:\n    agent: a\n    routes: [{regex: \"(\", to: end}]\n"
                    "    default: end\n"),
              HasSubstr("/w/g.yaml:4:22: steps.s1.routes[0].regex: invalid RE2 pattern"));
  // Two tests in one route.
  EXPECT_THAT(Error("steps:\n  s1:\n    agent: a\n    routes: [{contains: a, equals: b, to: end}]\n"
                    "    default: end\n"),
              HasSubstr("steps.s1.routes[0]: give exactly one of contains:, regex:, equals:"));
  // Step kinds.
  EXPECT_THAT(Error("steps:\n  s1: {instruction: x}\n"),
              HasSubstr("steps.s1: a step has exactly one of agent:, parallel:, await_input:"));
  EXPECT_THAT(Error("steps:\n  s1: {await_input: x}\n"),
              HasSubstr("the first step must run an agent"));
  EXPECT_THAT(Error("steps:\n  end: {agent: a}\n"), HasSubstr("'end' is reserved"));
  EXPECT_THAT(Error("steps:\n  s1: {agent: a, next: s2}\n  s2: {parallel: {p: {agent: b}}}\n"),
              HasSubstr("steps.s2.parallel: a parallel step needs join: STEP"));
  EXPECT_THAT(Error("steps:\n  s1: {agent: a, next: end, on_limit: end}\n"),
              HasSubstr("steps.s1.on_limit: on_limit needs max_visits"));
  EXPECT_THAT(Error("hops: [{agent: a}]\nsteps:\n  s1: {agent: a}\n"),
              HasSubstr("give either hops: (a line) or steps: (a graph)"));
  // Placeholders: {branches} only where a parallel block joins; branch names checked.
  EXPECT_THAT(Error("steps:\n  s1: {agent: a, instruction: \"{branches}\"}\n"),
              HasSubstr("steps.s1.instruction: unknown placeholder {branches}"));
  EXPECT_THAT(Error(R"(steps:
  s1: {agent: a, next: fan}
  fan:
    parallel: {p: {agent: b}}
    join: s2
  s2: {agent: c, instruction: "{branch.z}"}
)"),
              HasSubstr("/w/g.yaml:6:31: steps.s2.instruction: {branch.z}: no branch 'z'"));
  EXPECT_THAT(Error("steps:\n  s1: {agent: zz}\n"),
              HasSubstr("steps.s1.agent: unknown agent 'zz'"));
  EXPECT_THAT(Error("max_steps: 0\nsteps:\n  s1: {agent: a}\n"), HasSubstr("max_steps"));
}

TEST(GraphConfigTest, ShippedGraphWorkflowsLoad) {
  auto cfg = LoadDaemonConfig("configs/daemon.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto wfs = LoadWorkflowDir(cfg->workflows_dir, *cfg);
  ASSERT_TRUE(wfs.ok()) << wfs.status();
  int graphs = 0;
  for (const WorkflowConfig& w : *wfs) graphs += w.is_graph();
  EXPECT_EQ(graphs, 3);
}

}  // namespace
}  // namespace qkvshare::daemon

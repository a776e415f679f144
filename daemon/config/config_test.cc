#include "daemon/config/config.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::daemon {
namespace {

using ::testing::HasSubstr;

constexpr char kMinimal[] = R"(
listen: unix:///tmp/q.sock
models:
  m: {path: /models/x}
agents:
  a: {model: m}
)";

// Error message of parsing `yaml` as /etc/q/daemon.yaml ("" when it parses).
std::string ParseError(const std::string& yaml) {
  return std::string(ParseDaemonConfig(yaml, "/etc/q/daemon.yaml").status().message());
}

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

TEST(ConfigTest, ShippedConfigAndWorkflowsLoad) {
  auto cfg = LoadDaemonConfig("configs/daemon.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->listen, "unix:///run/qkvshare/qkvshared.sock");
  ASSERT_EQ(cfg->models.size(), 1u);
  EXPECT_TRUE(std::filesystem::exists(cfg->models[0].path + "/config.json")) << cfg->models[0].path;
  EXPECT_EQ(cfg->agents.size(), 3u);
  EXPECT_EQ(cfg->handoff.mode, HandoffMode::kCard);
  EXPECT_EQ(cfg->handoff.bits, 4.0);
  EXPECT_EQ(*cfg->FindAgent("ender")->generation.max_new_tokens, 64);

  auto wfs = LoadWorkflowDir(cfg->workflows_dir, *cfg);
  ASSERT_TRUE(wfs.ok()) << wfs.status();
  ASSERT_EQ(wfs->size(), 5u);  // approve, experts, review_loop (graphs), story, story_mixed
  const WorkflowConfig& story = (*wfs)[3];
  EXPECT_EQ(story.name, "story");
  ASSERT_EQ(story.hops.size(), 3u);
  EXPECT_EQ(story.hops[0].instruction, "{input}");
  ASSERT_TRUE(story.hops[1].handoff.has_value());
  EXPECT_EQ(story.hops[1].handoff->bits, 4.0);
  const WorkflowConfig& mixed = (*wfs)[4];
  EXPECT_EQ(mixed.hops[0].handoff->mode, HandoffMode::kFull);
  EXPECT_EQ(mixed.hops[1].handoff->mode, HandoffMode::kReprefill);
  EXPECT_EQ(mixed.hops[2].handoff->policy, BitPolicy::kUniform);
  EXPECT_FALSE(mixed.hops[3].handoff.has_value());  // the daemon default applies
}

TEST(ConfigTest, DefaultsAndRelativePaths) {
  auto cfg = ParseDaemonConfig(R"(
models:
  m: {path: ../models/x, dtype: bf16}
agents:
  a: {model: m, generation: {max_new_tokens: 9, stop: ["THE END"]}}
workflows_dir: wf
)",
                               "/etc/q/daemon.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->models[0].path, "/etc/models/x");
  EXPECT_EQ(cfg->models[0].dtype, DType::kBF16);
  EXPECT_EQ(cfg->workflows_dir, "/etc/q/wf");
  const AgentEntry& a = cfg->agents[0];
  EXPECT_EQ(*a.generation.max_new_tokens, 9);
  EXPECT_EQ(*a.generation.temperature, 0.0f);  // default filled
  EXPECT_EQ(a.generation.stop->at(0), "THE END");
  EXPECT_EQ(cfg->limits.queue_length, 16);
}

// Issue 14: models.NAME.weights.
TEST(ConfigTest, ModelWeights) {
  using agents::weights::WeightFormat;
  auto parse = [](const std::string& model) {
    return ParseDaemonConfig(
        absl::StrCat("listen: unix:///q\nmodels:\n  m: ", model, "\nagents: {a: {model: m}}\n"),
        "/etc/q/daemon.yaml");
  };
  auto weights = [&](const std::string& model) {
    absl::StatusOr<DaemonConfig> c = parse(model);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::make_pair(c->models[0].weights, c->models[0].dtype)
                  : std::make_pair(WeightFormat::kAuto, DType::kF16);
  };
  EXPECT_EQ(weights("{path: x}"), std::make_pair(WeightFormat::kAuto, DType::kF32));
  EXPECT_EQ(weights("{path: x, weights: q8}"), std::make_pair(WeightFormat::kQ8, DType::kF32));
  EXPECT_EQ(weights("{path: x, weights: q4, dtype: f32}"),
            std::make_pair(WeightFormat::kQ4, DType::kF32));
  EXPECT_EQ(weights("{path: x, weights: bf16}"), std::make_pair(WeightFormat::kBF16, DType::kBF16));
  EXPECT_EQ(weights("{path: x, weights: f32}"), std::make_pair(WeightFormat::kF32, DType::kF32));
  auto error = [&](const std::string& model) { return Msg(parse(model).status()); };
  EXPECT_THAT(error("{path: x, weights: q5}"),
              HasSubstr("/etc/q/daemon.yaml:3:25: models.m.weights: 'q5' is not one of: auto, "
                        "f32, bf16, f16, q8, q4"));
  EXPECT_THAT(error("{path: x, weights: f16}"),
              HasSubstr(":3:25: models.m.weights: f16: there is no f16 compute path"));
  EXPECT_THAT(error("{path: x, weights: q4, dtype: bf16}"),
              HasSubstr(":3:25: models.m.weights: q4 weights compute in f32; dtype must be f32"));
  EXPECT_THAT(error("{path: x, dtype: f32, weights: bf16}"),
              HasSubstr(":3:37: models.m.weights: bf16 contradicts dtype f32"));
}

TEST(ConfigTest, UnknownKeyNamesFileLineAndKey) {
  absl::Status s = ParseDaemonConfig(std::string(kMinimal) + "limits:\n  queue_lenght: 3\n",
                                     "/etc/q/daemon.yaml")
                       .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("/etc/q/daemon.yaml:8:3: limits.queue_lenght: unknown key"));
  EXPECT_THAT(Msg(s), HasSubstr("queue_length"));  // lists the allowed keys
}

TEST(ConfigTest, MaxConcurrentImports) {
  absl::StatusOr<DaemonConfig> cfg = ParseDaemonConfig(
      std::string(kMinimal) + "limits: {max_concurrent_imports: 5}\n", "/etc/q/daemon.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->limits.max_concurrent_imports, 5);
  EXPECT_THAT(ParseError(std::string(kMinimal) + "limits: {max_concurrent_imports: 0}\n"),
              HasSubstr("limits.max_concurrent_imports"));
}

TEST(ConfigTest, BadValuesNameTheKey) {
  EXPECT_THAT(ParseError(std::string(kMinimal) + "handoff: {bits: 9}\n"),
              HasSubstr("handoff.bits: 9 must be in [2, 8] or exactly 16"));
  EXPECT_THAT(ParseError(std::string(kMinimal) + "handoff: {mode: carrier}\n"),
              HasSubstr("handoff.mode: 'carrier' is not one of: card, full, reprefill"));
  EXPECT_THAT(ParseError(std::string(kMinimal) + "limits: {queue_length: lots}\n"),
              HasSubstr(":7:24: limits.queue_length: expected an integer, got 'lots'"));
  EXPECT_THAT(ParseError("listen: unix:///x\nmodels: {m: {path: p}}\nagents: {a: {model: n}}\n"),
              HasSubstr("agents.a.model: unknown model 'n'"));
  EXPECT_THAT(ParseError("models: {m: {dtype: f32}}\n"),
              HasSubstr("models.m.path: required key is missing"));
  EXPECT_THAT(ParseError(std::string(kMinimal) + "tcp_listen: 0.0.0.0:80\n"),
              HasSubstr("needs allow_remote: true"));
  EXPECT_THAT(ParseError("models: [1, 2]\n"), HasSubstr("models: expected a mapping"));
}

// Issue 18 item 6: TCP is only served with a token, and off loopback only
// with TLS.
TEST(ConfigTest, TcpNeedsATokenAndOffLoopbackTls) {
  EXPECT_THAT(ParseError(std::string(kMinimal) + "tcp_listen: 127.0.0.1:7420\n"),
              HasSubstr("tcp_listen: TCP needs tcp_auth_token_file"));
  EXPECT_EQ(ParseError(std::string(kMinimal) +
                       "tcp_listen: 127.0.0.1:7420\ntcp_auth_token_file: token\n"),
            "");
  absl::StatusOr<DaemonConfig> c = ParseDaemonConfig(
      std::string(kMinimal) + "tcp_listen: 127.0.0.1:7420\ntcp_auth_token_file: token\n",
      "/etc/q/daemon.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->tcp_auth_token_file, "/etc/q/token");
  EXPECT_THAT(ParseError(std::string(kMinimal) + "tcp_listen: 0.0.0.0:7420\nallow_remote: true\n"
                                                 "tcp_auth_token_file: /t\n"),
              HasSubstr("a non-loopback address needs tcp_tls_cert_file and tcp_tls_key_file"));
  EXPECT_THAT(
      ParseError(std::string(kMinimal) + "tcp_listen: 0.0.0.0:7420\nallow_remote: true\n"
                                         "tcp_auth_token_file: /t\ntcp_tls_cert_file: /c\n"),
      HasSubstr("tcp_tls_key_file: give both"));
  EXPECT_EQ(ParseError(std::string(kMinimal) +
                       "tcp_listen: 0.0.0.0:7420\nallow_remote: true\n"
                       "tcp_auth_token_file: /t\ntcp_tls_cert_file: /c\ntcp_tls_key_file: /k\n"),
            "");
}

TEST(ConfigTest, MinCardBitsPerModel) {
  auto cfg = ParseDaemonConfig(R"(
models:
  small: {path: /m/s, min_card_bits: 4}
  big: {path: /m/b}
agents:
  a: {model: small}
)",
                               "/etc/q/daemon.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->FindModel("small")->min_card_bits, 4.0);
  EXPECT_EQ(cfg->FindModel("big")->min_card_bits, 2.0);  // default: no floor beyond 2
  EXPECT_THAT(ParseError("models: {m: {path: p, min_card_bits: 9}}\nagents: {a: {model: m}}\n"),
              HasSubstr(":1:38: models.m.min_card_bits: 9 must be in [2, 8] or exactly 16"));
  EXPECT_THAT(ParseError("models: {m: {path: p, min_card_bits: 1}}\nagents: {a: {model: m}}\n"),
              HasSubstr("models.m.min_card_bits: 1 is out of range [2, 16]"));
  EXPECT_TRUE(ParseDaemonConfig(
                  "models: {m: {path: p, min_card_bits: 16}}\nagents: {a: {model: m}}\n", "/d.yaml")
                  .ok());
}

TEST(ConfigTest, SyntaxErrorHasPosition) {
  absl::Status s =
      ParseDaemonConfig("models:\n  m: {path: [unclosed\n", "/etc/q/daemon.yaml").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("/etc/q/daemon.yaml:"));
  EXPECT_THAT(Msg(s), HasSubstr("YAML syntax error"));
}

TEST(ConfigTest, MissingFileIsNotFound) {
  EXPECT_EQ(LoadDaemonConfig("/nonexistent/daemon.yaml").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ConfigTest, WorkflowErrors) {
  DaemonConfig cfg = ParseDaemonConfig(kMinimal, "/etc/q/daemon.yaml").value();
  EXPECT_THAT(Msg(ParseWorkflow("hops:\n  - agent: b\n", "/w/x.yaml", cfg).status()),
              HasSubstr("/w/x.yaml:2:12: hops[0].agent: unknown agent 'b'"));
  EXPECT_THAT(Msg(ParseWorkflow("hops: []\n", "/w/x.yaml", cfg).status()),
              HasSubstr("hops: required: a non-empty list of hops"));
  EXPECT_THAT(
      Msg(ParseWorkflow("hops:\n  - {agent: a, instrction: x}\n", "/w/x.yaml", cfg).status()),
      HasSubstr("hops[0].instrction: unknown key"));
  EXPECT_THAT(Msg(ParseWorkflow("hops:\n  - {agent: a, generation: {top_p: 0}}\n", "/w/x.yaml", cfg)
                      .status()),
              HasSubstr("hops[0].generation.top_p: must be > 0"));
  auto wf = ParseWorkflow("hops:\n  - {agent: a}\n  - {agent: a, handoff: {bits: 3}}\n",
                          "/w/two_hops.yaml", cfg);
  ASSERT_TRUE(wf.ok()) << wf.status();
  EXPECT_EQ(wf->name, "two_hops");
  EXPECT_EQ(wf->hops[1].handoff->bits, 3.0);
  EXPECT_EQ(wf->hops[1].handoff->mode, HandoffMode::kCard);  // from the daemon default
}

TEST(ConfigTest, DuplicateKeysAreErrorsAtTheSecond) {
  EXPECT_THAT(ParseError(std::string(kMinimal) + "log_level: info\nlog_level: debug\n"),
              HasSubstr("/etc/q/daemon.yaml:8:1: log_level: duplicate key (first at line 7)"));
  EXPECT_THAT(ParseError("listen: unix:///x\nmodels: {m: {path: p}}\nagents:\n  a: {model: m}\n"
                         "  a: {model: nosuch}\n"),
              HasSubstr(":5:3: agents.a: duplicate key (first at line 4)"));
  DaemonConfig cfg = ParseDaemonConfig(kMinimal, "/etc/q/daemon.yaml").value();
  EXPECT_THAT(Msg(ParseWorkflow("hops:\n  - {agent: a, agent: a}\n", "/w/x.yaml", cfg).status()),
              HasSubstr("/w/x.yaml:2:16: hops[0].agent: duplicate key (first at line 2)"));
}

TEST(ConfigTest, NamesAndPlaceholdersAreChecked) {
  EXPECT_THAT(
      ParseError("listen: unix:///x\nmodels: {m: {path: p}}\nagents: {\"a b\": {model: m}}\n"),
      HasSubstr("agent name 'a b' is not 1-64 characters of letters, digits"));
  EXPECT_THAT(ParseError("models: {m: {path: p}}\nagents:\n  a:\n    model: m\n"
                         "    prompt_template: \"<s>{instruction}{instrucion}\"\n"),
              HasSubstr("unknown placeholder {instrucion} (known: {instruction})"));
  DaemonConfig cfg = ParseDaemonConfig(kMinimal, "/etc/q/daemon.yaml").value();
  EXPECT_THAT(Msg(ParseWorkflow("name: \"a/b\"\nhops: [{agent: a}]\n", "/w/x.yaml", cfg).status()),
              HasSubstr("/w/x.yaml:1:7: name: workflow name 'a/b' is not"));
  EXPECT_THAT(
      Msg(ParseWorkflow("hops:\n  - {agent: a, instruction: \"{inptu} next\"}\n", "/w/x.yaml", cfg)
              .status()),
      HasSubstr("hops[0].instruction: unknown placeholder {inptu} (known: {input}, "
                "{previous}, {hop})"));
  // Braces that are not {word} are text; known placeholders pass.
  EXPECT_TRUE(
      ParseWorkflow("hops:\n  - {agent: a, instruction: \"{input} as {\\\"k\\\": 1} {hop}\"}\n",
                    "/w/x.yaml", cfg)
          .ok());
  // The unknown-key message lists every key a hop takes, handoff included.
  EXPECT_THAT(
      Msg(ParseWorkflow("hops:\n  - {agent: a, handof: {bits: 3}}\n", "/w/x.yaml", cfg).status()),
      HasSubstr("allowed here: agent, generation, handoff, instruction"));
}

// Strings from YAML end up in proto3 strings (which must be UTF-8) and in
// the tokenizer: invalid UTF-8 is a config error at the value, not a failure
// later in a listing or a task.
TEST(ConfigTest, InvalidUtf8IsAnErrorWithLocationAndKey) {
  DaemonConfig cfg = ParseDaemonConfig(kMinimal, "/etc/q/daemon.yaml").value();
  EXPECT_THAT(
      Msg(ParseWorkflow("hops:\n  - agent: a\n    instruction: \"ok \xff\xfe\"\n", "/w/x.yaml", cfg)
              .status()),
      HasSubstr("/w/x.yaml:3:18: hops[0].instruction: text is not valid UTF-8 "
                "(ill-formed or truncated sequence at byte 3 of the value)"));
  EXPECT_THAT(
      Msg(ParseWorkflow("description: \xc3\nhops: [{agent: a}]\n", "/w/x.yaml", cfg).status()),
      HasSubstr("/w/x.yaml:1:14: description: text is not valid UTF-8"));
  EXPECT_THAT(
      Msg(ParseWorkflow("hops:\n  - {agent: a, generation: {stop: [\"x\", \"\xed\xa0\x80\"]}}\n",
                        "/w/x.yaml", cfg)
              .status()),
      HasSubstr("/w/x.yaml:2:41: hops[0].generation.stop[1]: text is not valid UTF-8"));
  EXPECT_THAT(ParseError(std::string(kMinimal) + "  b: {model: m, system: \"\xff\"}\n"),
              HasSubstr("/etc/q/daemon.yaml:7:25: agents.b.system: text is not valid UTF-8"));
  EXPECT_THAT(ParseError(std::string(kMinimal) +
                         "  b: {model: m, prompt_template: \"\xfe{instruction}\"}\n"),
              HasSubstr("agents.b.prompt_template: text is not valid UTF-8"));
  EXPECT_THAT(ParseError(std::string(kMinimal) + "  b: {model: m, generation: {stop: \"\x80\"}}\n"),
              HasSubstr("agents.b.generation.stop: text is not valid UTF-8"));
  // Valid multi-byte text passes unchanged.
  auto wf = ParseWorkflow("hops:\n  - {agent: a, instruction: \"caf\xc3\xa9 {input}\"}\n",
                          "/w/x.yaml", cfg);
  ASSERT_TRUE(wf.ok()) << wf.status();
  EXPECT_EQ(wf->hops[0].instruction, "caf\xc3\xa9 {input}");
}

// docs/configuration.md states the card store bounds the parser enforces,
// and when TTL expiry happens.
TEST(ConfigTest, CardStoreBoundsAreDocumented) {
  EXPECT_THAT(ParseError(std::string(kMinimal) + "card_store: {quota_bytes: 65535}\n"),
              HasSubstr("card_store.quota_bytes: 65535 is out of range [65536, "));
  EXPECT_TRUE(
      ParseDaemonConfig(std::string(kMinimal) + "card_store: {quota_bytes: 65536}\n", "/d.yaml")
          .ok());
  EXPECT_THAT(ParseError(std::string(kMinimal) + "card_store: {ttl_seconds: 31536001}\n"),
              HasSubstr("card_store.ttl_seconds: 31536001 is out of range [0, 31536000]"));
  std::ifstream in("docs/configuration.md");
  ASSERT_TRUE(in) << "docs/configuration.md is not a runfile";
  std::string quota_row, ttl_row;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("| `quota_bytes` |", 0) == 0) quota_row = line;
    if (line.rfind("| `ttl_seconds` |", 0) == 0) ttl_row = line;
  }
  EXPECT_THAT(quota_row, HasSubstr("at least 65536"));
  EXPECT_THAT(ttl_row, HasSubstr("at most 31536000"));
  EXPECT_THAT(ttl_row, HasSubstr("next card store or fetch"));
}

TEST(ConfigTest, WorkflowHopCountIsBounded) {
  DaemonConfig cfg = ParseDaemonConfig(kMinimal, "/etc/q/daemon.yaml").value();
  std::string hops = "hops:\n";
  for (int i = 0; i < kMaxHops; ++i) hops += "  - {agent: a}\n";
  EXPECT_TRUE(ParseWorkflow(hops, "/w/x.yaml", cfg).ok());
  hops += "  - {agent: a}\n";
  EXPECT_THAT(Msg(ParseWorkflow(hops, "/w/x.yaml", cfg).status()),
              HasSubstr("hops: 257 hops; at most 256"));
}

TEST(ConfigTest, CheckModelDirectoriesNamesTheConfigLocation) {
  DaemonConfig cfg = ParseDaemonConfig(kMinimal, "/etc/q/daemon.yaml").value();
  absl::Status s = CheckModelDirectories(cfg);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(s), HasSubstr("/etc/q/daemon.yaml:4:13: models.m.path: model directory not "
                                "found: /models/x"));
  auto shipped = LoadDaemonConfig("configs/daemon.yaml");
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  EXPECT_TRUE(CheckModelDirectories(*shipped).ok());
}

TEST(ConfigTest, CheckModelDirectoriesAcceptsGgufFiles) {
  const std::string dir = std::string(getenv("TEST_TMPDIR")) + "/gguf";
  std::filesystem::create_directories(dir);
  { std::ofstream(dir + "/m.gguf") << "GGUF"; }
  DaemonConfig cfg = ParseDaemonConfig(kMinimal, "/etc/q/daemon.yaml").value();
  cfg.models[0].path = dir + "/m.gguf";
  EXPECT_TRUE(CheckModelDirectories(cfg).ok());
  cfg.models[0].path = dir + "/missing.gguf";
  absl::Status s = CheckModelDirectories(cfg);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(s), HasSubstr("model file not found: " + dir + "/missing.gguf"));
}

TEST(ConfigTest, WorkflowDirRejectsDuplicateNames) {
  DaemonConfig cfg = ParseDaemonConfig(kMinimal, "/etc/q/daemon.yaml").value();
  std::string dir = std::string(getenv("TEST_TMPDIR")) + "/wf";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/a.yaml") << "name: same\nhops: [{agent: a}]\n";
  std::ofstream(dir + "/b.yml") << "name: same\nhops: [{agent: a}]\n";
  absl::Status s = LoadWorkflowDir(dir, cfg).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(s), HasSubstr("b.yml: workflow name 'same' is already used"));
}

}  // namespace
}  // namespace qkvshare::daemon

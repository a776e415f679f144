// Generation on the bundled stories260K model: golden greedy runs of
// llama2.c run.c (ids, stop, text through the tokenizer), streaming, stop
// strings, cancellation, seeded sampling.
#include "agents/generator.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "base/cpu_info.h"
#include "gtest/gtest.h"
#include "hwy/targets.h"
#include "nlohmann/json.hpp"

namespace qkvshare::agents {
namespace {

constexpr char kModelDir[] = "models/stories260K";

nlohmann::json Golden() {
  std::ifstream in(std::string(kModelDir) + "/golden/greedy.json");
  std::stringstream s;
  s << in.rdbuf();
  return nlohmann::json::parse(s.str());
}

class GeneratorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto m = Model::Load(kModelDir, {DType::kF32});
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = new ModelHandle(std::move(*m));
  }
  static void TearDownTestSuite() { delete model_; }
  std::unique_ptr<Sequence> NewSequence() {
    auto s = Sequence::Create(*model_);
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  }
  const Tokenizer& tokenizer() { return *(*model_)->tokenizer(); }
  std::vector<int32_t> Encode(const std::string& text) {
    auto ids = tokenizer().Encode(text);
    EXPECT_TRUE(ids.ok()) << ids.status();
    return *ids;
  }
  static ModelHandle* model_;
};
ModelHandle* GeneratorTest::model_ = nullptr;

TEST_F(GeneratorTest, GreedyMatchesRunC) {
  ASSERT_NE((*model_)->tokenizer(), nullptr);
  nlohmann::json golden = Golden();
  const int steps = golden["steps"];
  ASSERT_EQ(golden["cases"].size(), 8u);
  for (const nlohmann::json& c : golden["cases"]) {
    const std::string prompt = c["prompt"];
    SCOPED_TRACE(prompt);
    std::vector<int32_t> prompt_ids = Encode(prompt);
    EXPECT_EQ(prompt_ids, c["prompt_ids"].get<std::vector<int32_t>>());
    GenerateOptions opts;  // greedy; stop ids from generation_config.json: [2, 1]
    // run.c's -n counts positions: prompt_len - 1 + generated <= steps.
    opts.max_new_tokens = steps - (static_cast<int>(prompt_ids.size()) - 1);
    std::string streamed;
    opts.on_token = [&](int32_t, std::string_view piece) {
      streamed += piece;
      return true;
    };
    auto seq = NewSequence();
    auto r = Generate(*seq, prompt_ids, opts);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->ids, c["generated_ids"].get<std::vector<int32_t>>());
    if (c["stopped_on_token"].is_null()) {
      EXPECT_EQ(r->stop_reason, StopReason::kMaxNewTokens);
      EXPECT_FALSE(r->stop_token.has_value());
    } else {
      EXPECT_EQ(r->stop_reason, StopReason::kStopToken);
      EXPECT_EQ(r->stop_token, c["stopped_on_token"].get<int32_t>());
    }
    EXPECT_EQ(r->text, c["completion_text"].get<std::string>());
    EXPECT_EQ(streamed, r->text);
    std::vector<int32_t> all = prompt_ids;
    all.insert(all.end(), r->ids.begin(), r->ids.end());
    EXPECT_EQ(tokenizer().Decode(all), c["text"].get<std::string>());
    EXPECT_EQ(r->timings.tokens_in, static_cast<int64_t>(prompt_ids.size()));
    EXPECT_EQ(r->timings.tokens_out, static_cast<int64_t>(r->ids.size()));
    // The stop token is never fed; without one, the last generated token is
    // not fed either (no feed_final_token).
    EXPECT_EQ(seq->length(),
              static_cast<int64_t>(all.size()) - (r->stop_token.has_value() ? 0 : 1));
  }
}

// The decode kernels dispatch per SIMD target; sums differ in rounding
// between vector widths, but the greedy ids must not.
TEST_F(GeneratorTest, GreedyIdsIdenticalOnEverySimdTarget) {
  nlohmann::json golden = Golden();
  const int steps = golden["steps"];
  for (int64_t target : UsableSimdTargets()) {
    ASSERT_TRUE(ForceSimdTarget(hwy::TargetName(target)).ok());
    SCOPED_TRACE(hwy::TargetName(target));
    for (const nlohmann::json& c : golden["cases"]) {
      const std::vector<int32_t> prompt_ids = c["prompt_ids"];
      GenerateOptions opts;
      opts.max_new_tokens = steps - (static_cast<int>(prompt_ids.size()) - 1);
      auto seq = NewSequence();
      auto r = Generate(*seq, prompt_ids, opts);
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->ids, c["generated_ids"].get<std::vector<int32_t>>()) << c["prompt"];
    }
  }
  ASSERT_TRUE(ForceSimdTarget("best").ok());
}

TEST_F(GeneratorTest, StopStringEndsTextBeforeIt) {
  nlohmann::json c =
      Golden()["cases"][0];  // "Once upon a time, there was a little girl named Lily..."
  const std::string completion = c["completion_text"];
  const std::string stop = "named Li";
  ASSERT_NE(completion.find(stop), std::string::npos);
  GenerateOptions opts;
  opts.max_new_tokens = 100;
  opts.stop_strings = {"zebra", stop};
  std::string streamed;
  opts.on_token = [&](int32_t, std::string_view piece) {
    streamed += piece;
    return true;
  };
  auto seq = NewSequence();
  auto r = Generate(*seq, Encode(c["prompt"]), opts);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stop_reason, StopReason::kStopString);
  EXPECT_EQ(r->text, completion.substr(0, completion.find(stop)));
  EXPECT_EQ(streamed, r->text);
  // The ids run up to the token that completed "Li" ("Lily" is one piece).
  const std::vector<int32_t> golden_ids = c["generated_ids"];
  ASSERT_LE(r->ids.size(), golden_ids.size());
  EXPECT_EQ(r->ids, std::vector<int32_t>(golden_ids.begin(), golden_ids.begin() + r->ids.size()));
  EXPECT_NE(tokenizer().Decode(r->ids).find(stop), std::string::npos);
  EXPECT_EQ(tokenizer().Decode(std::vector<int32_t>(r->ids.begin(), r->ids.end() - 1)).find(stop),
            std::string::npos);
}

TEST_F(GeneratorTest, CancelAndFeedFinalToken) {
  std::vector<int32_t> prompt = Encode("Tom and his dog");
  GenerateOptions opts;
  int calls = 0;
  opts.on_token = [&](int32_t id, std::string_view) { return id == kFlushId || ++calls < 5; };
  opts.feed_final_token = true;
  auto seq = NewSequence();
  auto r = Generate(*seq, prompt, opts);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stop_reason, StopReason::kCancelled);
  EXPECT_EQ(r->ids.size(), 5u);
  // feed_final_token: the cache holds prompt + all 5 generated tokens.
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), r->ids.begin(), r->ids.end());
  EXPECT_EQ(seq->token_ids(), all);

  // Continue with an empty prompt: re-runs the last token, same greedy path.
  GenerateOptions more;
  more.max_new_tokens = 10;
  auto r2 = Generate(*seq, {}, more);
  ASSERT_TRUE(r2.ok()) << r2.status();
  auto fresh = NewSequence();
  GenerateOptions whole;
  whole.max_new_tokens = 15;
  auto r3 = Generate(*fresh, prompt, whole);
  ASSERT_TRUE(r3.ok());
  std::vector<int32_t> joined = r->ids;
  joined.insert(joined.end(), r2->ids.begin(), r2->ids.end());
  EXPECT_EQ(joined, r3->ids);
  EXPECT_EQ(Generate(*NewSequence(), {}, more).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(GeneratorTest, SeededSamplingIsDeterministic) {
  std::vector<int32_t> prompt = Encode("Lily wanted to");
  auto run = [&](SamplingParams p) {
    GenerateOptions opts;
    opts.sampling = p;
    opts.max_new_tokens = 40;
    opts.stop_token_ids = std::vector<int32_t>{};  // run all 40 steps
    auto seq = NewSequence();
    auto r = Generate(*seq, prompt, opts);
    EXPECT_TRUE(r.ok()) << r.status();
    return r->ids;
  };
  SamplingParams hot{.temperature = 1.0f, .top_p = 0.95f, .seed = 1234};
  std::vector<int32_t> a = run(hot);
  EXPECT_EQ(a.size(), 40u);
  EXPECT_EQ(run(hot), a);
  hot.seed = 99;
  EXPECT_NE(run(hot), a);
  std::vector<int32_t> greedy = run({});
  EXPECT_EQ(run({.temperature = 1.5f, .top_k = 1, .seed = 5}), greedy);
  EXPECT_NE(a, greedy);
}

TEST_F(GeneratorTest, RejectsBadOptions) {
  auto seq = NewSequence();
  std::vector<int32_t> prompt = {1, 403};
  GenerateOptions bad;
  bad.sampling.top_p = 2.0f;
  EXPECT_EQ(Generate(*seq, prompt, bad).status().code(), absl::StatusCode::kInvalidArgument);
  GenerateOptions empty_stop;
  empty_stop.stop_strings = {""};
  EXPECT_EQ(Generate(*seq, prompt, empty_stop).status().code(), absl::StatusCode::kInvalidArgument);
  GenerateOptions ok;
  EXPECT_EQ(Generate(*seq, std::vector<int32_t>{1, 700}, ok).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Generate(*seq, std::vector<int32_t>(600, 5), ok).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(seq->length(), 0);
}

}  // namespace
}  // namespace qkvshare::agents

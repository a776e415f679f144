// Golden tests of the runtime against llama2.c run.c on the bundled
// stories260K model (models/stories260K/golden, see its README), plus
// consistency tests (decode vs full forward, chunked vs unchunked prefill)
// on random tiny models of every supported variant.
#include "agents/sequence.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace qkvshare::agents {
namespace {

constexpr char kModelDir[] = "models/stories260K";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

ModelHandle LoadModel(const std::string& dir, DType dtype) {
  auto model = Model::Load(dir, {dtype});
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? ModelHandle(std::move(*model)) : nullptr;
}

// Greedy: first index of the maximum (run.c's argmax).
int32_t ArgMax(absl::Span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

TEST(SequenceGoldenTest, LogitsMatchRunC) {
  ModelHandle model = LoadModel(kModelDir, DType::kF32);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->copied_weight_bytes(), 0u);  // F32 on disk: used in place
  nlohmann::json golden =
      nlohmann::json::parse(ReadAll(std::string(kModelDir) + "/golden/greedy.json"));
  const nlohmann::json& c = golden["cases"][0];
  ASSERT_EQ(c["prompt"], "Once upon a time");
  std::vector<int32_t> seq = c["prompt_ids"].get<std::vector<int32_t>>();
  for (int32_t id : c["generated_ids"]) seq.push_back(id);
  seq.resize(200);
  std::string raw = ReadAll(std::string(kModelDir) + "/golden/logits_full_once_upon_a_time.f32");
  ASSERT_EQ(raw.size(), 200u * 512 * 4);
  const float* want = reinterpret_cast<const float*>(raw.data());

  for (int chunk : {512, 7}) {  // one chunk, and many (chunked prefill)
    auto s = Sequence::Create(model, {.prefill_chunk_tokens = chunk});
    ASSERT_TRUE(s.ok()) << s.status();
    auto logits = (*s)->Append(seq, LogitsMode::kAll);
    ASSERT_TRUE(logits.ok()) << logits.status();
    ASSERT_EQ(logits->rows, 200);
    ASSERT_EQ(logits->vocab, 512);
    double max_err = 0;
    for (int64_t i = 0; i < 200 * 512; ++i) {
      max_err = std::max(max_err, std::fabs(double{logits->data[i]} - want[i]));
    }
    EXPECT_LT(max_err, 1e-4) << "chunk " << chunk;
    std::printf("chunk %d: max |logit - run.c| = %.3g\n", chunk, max_err);
  }
  // Token by token: the same logits.
  auto s = Sequence::Create(model);
  ASSERT_TRUE(s.ok());
  double max_err = 0;
  for (int p = 0; p < 200; ++p) {
    auto row = (*s)->Decode(seq[p]);
    ASSERT_TRUE(row.ok()) << row.status();
    for (int j = 0; j < 512; ++j) {
      max_err = std::max(max_err, std::fabs(double{(*row)[j]} - want[p * 512 + j]));
    }
  }
  EXPECT_LT(max_err, 1e-4);
  EXPECT_EQ((*s)->token_ids(), seq);
}

TEST(SequenceGoldenTest, GreedyIdsMatchRunC) {
  ModelHandle model = LoadModel(kModelDir, DType::kF32);
  ASSERT_NE(model, nullptr);
  nlohmann::json golden =
      nlohmann::json::parse(ReadAll(std::string(kModelDir) + "/golden/greedy.json"));
  const int steps = golden["steps"];
  for (const nlohmann::json& c : golden["cases"]) {
    SCOPED_TRACE(c["prompt"].get<std::string>());
    std::vector<int32_t> prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    auto s = Sequence::Create(model);
    ASSERT_TRUE(s.ok());
    auto lv = (*s)->Append(prompt);
    ASSERT_TRUE(lv.ok()) << lv.status();
    std::vector<int32_t> generated;
    std::optional<int32_t> stopped;
    int32_t next = ArgMax(lv->row(0));
    // run.c counts positions: prompt_len - 1 + generated <= steps.
    while (true) {
      if (next == 1 || next == 2) {
        stopped = next;
        break;
      }
      generated.push_back(next);
      if (static_cast<int>(prompt.size()) - 1 + static_cast<int>(generated.size()) >= steps) break;
      auto row = (*s)->Decode(next);
      ASSERT_TRUE(row.ok()) << row.status();
      next = ArgMax(*row);
    }
    EXPECT_EQ(generated, c["generated_ids"].get<std::vector<int32_t>>());
    if (c["stopped_on_token"].is_null()) {
      EXPECT_FALSE(stopped.has_value());
    } else {
      EXPECT_EQ(stopped, c["stopped_on_token"].get<int32_t>());
    }
  }
}

}  // namespace
}  // namespace qkvshare::agents

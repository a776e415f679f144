// Checks the bundled model directory against its own README: the shape table
// there must agree with config.json, and the golden files must have the sizes
// their metadata states. A fresh clone runs every test from these files.
#include <cstdint>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace {

const char kModelDir[] = "models/stories260K/";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Parses the README's "## Shape" table rows "| name | value |" into a map.
std::map<std::string, std::string> ShapeTable(const std::string& readme) {
  std::map<std::string, std::string> rows;
  size_t start = readme.find("## Shape");
  size_t end = readme.find("\n## ", start + 1);
  std::istringstream lines(readme.substr(start, end - start));
  std::regex row(R"(^\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|$)");
  std::string line;
  std::smatch m;
  while (std::getline(lines, line)) {
    if (std::regex_match(line, m, row)) rows[m[1]] = m[2];
  }
  return rows;
}

// First integer in `s` ("8 (head_dim 8)" -> 8; "260,032 (...)" -> 260032).
int64_t LeadingInt(std::string s) {
  s = absl::StrReplaceAll(s, {{",", ""}});
  std::smatch m;
  std::regex num(R"(\d+)");
  EXPECT_TRUE(std::regex_search(s, m, num)) << s;
  int64_t v = 0;
  EXPECT_TRUE(absl::SimpleAtoi(m.str(), &v));
  return v;
}

TEST(ModelFilesTest, ConfigMatchesReadmeShapeTable) {
  std::string readme = ReadFile(std::string(kModelDir) + "README.md");
  ASSERT_FALSE(readme.empty());
  auto table = ShapeTable(readme);
  ASSERT_GE(table.size(), 9u) << "README shape table not found";
  nlohmann::json cfg = nlohmann::json::parse(ReadFile(std::string(kModelDir) + "config.json"));

  EXPECT_EQ(cfg["model_type"], "llama");
  EXPECT_EQ(cfg["hidden_size"].get<int64_t>(), LeadingInt(table["hidden_size (dim)"]));
  EXPECT_EQ(cfg["intermediate_size"].get<int64_t>(),
            LeadingInt(table["intermediate_size (hidden_dim)"]));
  EXPECT_EQ(cfg["num_hidden_layers"].get<int64_t>(), LeadingInt(table["num_hidden_layers"]));
  EXPECT_EQ(cfg["num_attention_heads"].get<int64_t>(), LeadingInt(table["num_attention_heads"]));
  EXPECT_EQ(cfg["num_key_value_heads"].get<int64_t>(), LeadingInt(table["num_key_value_heads"]));
  EXPECT_EQ(cfg["vocab_size"].get<int64_t>(), LeadingInt(table["vocab_size"]));
  EXPECT_EQ(cfg["max_position_embeddings"].get<int64_t>(),
            LeadingInt(table["max_position_embeddings (seq_len)"]));
  // "8 (head_dim 8)": head_dim = hidden / heads, and config.json states it.
  EXPECT_EQ(cfg["head_dim"].get<int64_t>(),
            cfg["hidden_size"].get<int64_t>() / cfg["num_attention_heads"].get<int64_t>());
  EXPECT_NE(table["num_attention_heads"].find("head_dim " + cfg["head_dim"].dump()),
            std::string::npos);
  EXPECT_EQ(table["rms_norm_eps / rope_theta"], "1e-5 / 10000");
  EXPECT_DOUBLE_EQ(cfg["rms_norm_eps"].get<double>(), 1e-5);
  EXPECT_DOUBLE_EQ(cfg["rope_theta"].get<double>(), 10000.0);
  EXPECT_TRUE(cfg["tie_word_embeddings"].get<bool>());
}

// The parameter count in the README equals the element count of every tensor
// listed in the safetensors header, and the data section has exactly that many
// float32 values.
TEST(ModelFilesTest, SafetensorsHeaderMatchesParameterCount) {
  std::string readme = ReadFile(std::string(kModelDir) + "README.md");
  int64_t params = LeadingInt(ShapeTable(readme)["parameters"]);
  std::string st = ReadFile(std::string(kModelDir) + "model.safetensors");
  ASSERT_GE(st.size(), 8u);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(st[i]);
  nlohmann::json header = nlohmann::json::parse(st.substr(8, header_len));
  int64_t count = 0;
  int tensors = 0;
  for (auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    ++tensors;
    EXPECT_EQ(info["dtype"], "F32") << name;
    int64_t n = 1;
    for (auto d : info["shape"]) n *= d.get<int64_t>();
    count += n;
  }
  EXPECT_EQ(count, params);
  EXPECT_EQ(tensors, 47);
  EXPECT_EQ(st.size() - 8 - header_len, static_cast<uint64_t>(params) * 4);
}

TEST(ModelFilesTest, GoldenLogitsHaveStatedShape) {
  nlohmann::json meta = nlohmann::json::parse(
      ReadFile(std::string(kModelDir) + "golden/logits_full_once_upon_a_time.json"));
  std::string f32 = ReadFile(std::string(kModelDir) + "golden/" + meta["file"].get<std::string>());
  EXPECT_EQ(f32.size(), meta["shape"][0].get<size_t>() * meta["shape"][1].get<size_t>() * 4);
  nlohmann::json greedy =
      nlohmann::json::parse(ReadFile(std::string(kModelDir) + "golden/greedy.json"));
  EXPECT_EQ(greedy["cases"].size(), 8u);
}

}  // namespace

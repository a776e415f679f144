#include "eval/golden_cases.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace qkvshare::eval {

absl::StatusOr<std::vector<GoldenCase>> LoadGoldenCases(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read golden file ", path));
  std::ostringstream text;
  text << in.rdbuf();
  std::vector<GoldenCase> out;
  try {
    const nlohmann::json doc = nlohmann::json::parse(text.str());
    const nlohmann::json& cases = doc.at("cases");
    for (size_t i = 0; i < cases.size(); ++i) {
      const nlohmann::json& c = cases[i];
      GoldenCase g;
      g.index = static_cast<int>(i);
      g.prompt = c.at("prompt").get<std::string>();
      g.ids = c.at("prompt_ids").get<std::vector<int32_t>>();
      g.prompt_tokens = static_cast<int64_t>(g.ids.size());
      for (int32_t id : c.at("generated_ids").get<std::vector<int32_t>>()) g.ids.push_back(id);
      out.push_back(std::move(g));
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": malformed golden file (case ", out.size(), "): ", e.what()));
  }
  return out;
}

}  // namespace qkvshare::eval

#include "agents/model_config.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "agents/file_util.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace qkvshare::agents {
namespace {

using Json = nlohmann::json;

// Error helper: "<origin>: key '<key>': <what>".
absl::Status KeyError(absl::string_view origin, absl::string_view key, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(origin, ": key '", key, "': ", what));
}

absl::StatusOr<Json> ParseJson(std::string_view text, absl::string_view origin) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(origin, ": invalid JSON"));
  if (!j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": top level is not a JSON object"));
  }
  return j;
}

bool Present(const Json& j, const char* key) { return j.contains(key) && !j.at(key).is_null(); }

// An integer in [min, max]; integral floats (1e5) are accepted.
absl::StatusOr<int64_t> GetInt(const Json& j, const char* key, absl::string_view origin,
                               std::optional<int64_t> fallback, int64_t min = 1,
                               int64_t max = std::numeric_limits<int32_t>::max()) {
  if (!Present(j, key)) {
    if (fallback.has_value()) return *fallback;
    return KeyError(origin, key, "missing");
  }
  const Json& v = j.at(key);
  int64_t out;
  if (v.is_number_integer()) {
    out = v.get<int64_t>();
  } else if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() &&
             std::fabs(v.get<double>()) < 9e15) {
    out = static_cast<int64_t>(v.get<double>());
  } else {
    return KeyError(origin, key, absl::StrCat("expected an integer, got ", v.dump()));
  }
  if (out < min || out > max) {
    return KeyError(origin, key, absl::StrCat(out, " is outside [", min, ", ", max, "]"));
  }
  return out;
}

absl::StatusOr<double> GetPositive(const Json& j, const char* key, absl::string_view origin,
                                   std::optional<double> fallback) {
  if (!Present(j, key)) {
    if (fallback.has_value()) return *fallback;
    return KeyError(origin, key, "missing");
  }
  const Json& v = j.at(key);
  if (!v.is_number() || !(v.get<double>() > 0) || !std::isfinite(v.get<double>())) {
    return KeyError(origin, key, absl::StrCat("expected a positive number, got ", v.dump()));
  }
  return v.get<double>();
}

absl::StatusOr<bool> GetBool(const Json& j, const char* key, absl::string_view origin,
                             bool fallback) {
  if (!Present(j, key)) return fallback;
  if (!j.at(key).is_boolean()) {
    return KeyError(origin, key, absl::StrCat("expected true/false, got ", j.at(key).dump()));
  }
  return j.at(key).get<bool>();
}

// A token id or a list of them ("eos_token_id": 2 or [2, 1]); null -> {}.
absl::StatusOr<std::vector<int32_t>> GetIdList(const Json& j, const char* key,
                                               absl::string_view origin) {
  std::vector<int32_t> ids;
  if (!Present(j, key)) return ids;
  const Json& v = j.at(key);
  auto one = [&](const Json& e) -> absl::Status {
    if (!e.is_number_integer() || e.get<int64_t>() < 0 ||
        e.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return KeyError(origin, key, absl::StrCat("expected token ids, got ", v.dump()));
    }
    ids.push_back(static_cast<int32_t>(e.get<int64_t>()));
    return absl::OkStatus();
  };
  if (v.is_array()) {
    for (const Json& e : v) QKV_RETURN_IF_ERROR(one(e));
  } else {
    QKV_RETURN_IF_ERROR(one(v));
  }
  return ids;
}

absl::StatusOr<RopeScaling> ParseRopeScaling(const Json& j, absl::string_view origin) {
  RopeScaling out;
  if (!Present(j, "rope_scaling")) return out;
  const Json& rs = j.at("rope_scaling");
  if (!rs.is_object()) return KeyError(origin, "rope_scaling", "expected an object or null");
  std::string type;
  for (const char* k : {"rope_type", "type"}) {
    if (Present(rs, k) && rs.at(k).is_string()) {
      type = rs.at(k).get<std::string>();
      break;
    }
  }
  std::string where = absl::StrCat(origin, ": rope_scaling");
  if (type == "default") return out;
  if (type == "linear") {
    out.type = RopeScaling::Type::kLinear;
    QKV_ASSIGN_OR_RETURN(out.factor, GetPositive(rs, "factor", where, std::nullopt));
    return out;
  }
  if (type == "llama3") {
    out.type = RopeScaling::Type::kLlama3;
    QKV_ASSIGN_OR_RETURN(out.factor, GetPositive(rs, "factor", where, std::nullopt));
    QKV_ASSIGN_OR_RETURN(out.low_freq_factor,
                         GetPositive(rs, "low_freq_factor", where, std::nullopt));
    QKV_ASSIGN_OR_RETURN(out.high_freq_factor,
                         GetPositive(rs, "high_freq_factor", where, std::nullopt));
    QKV_ASSIGN_OR_RETURN(out.original_max_position_embeddings,
                         GetInt(rs, "original_max_position_embeddings", where, std::nullopt, 1,
                                std::numeric_limits<int64_t>::max()));
    if (out.high_freq_factor <= out.low_freq_factor) {
      return KeyError(where, "high_freq_factor", "must exceed low_freq_factor");
    }
    return out;
  }
  return KeyError(origin, "rope_scaling",
                  absl::StrCat("unsupported type '", type.empty() ? rs.dump() : type,
                               "' (supported: null, linear, llama3)"));
}

absl::Status ParseGeneration(std::string_view text, absl::string_view origin, ModelConfig& config) {
  GenerationDefaults& g = config.generation;
  g.eos_token_ids = config.eos_token_ids;
  if (text.empty()) return absl::OkStatus();
  QKV_ASSIGN_OR_RETURN(Json j, ParseJson(text, origin));
  if (Present(j, "eos_token_id")) {
    QKV_ASSIGN_OR_RETURN(g.eos_token_ids, GetIdList(j, "eos_token_id", origin));
  }
  QKV_ASSIGN_OR_RETURN(g.do_sample, GetBool(j, "do_sample", origin, false));
  if (Present(j, "temperature")) {
    if (!j.at("temperature").is_number() || j.at("temperature").get<double>() < 0) {
      return KeyError(origin, "temperature", "expected a number >= 0");
    }
    g.temperature = j.at("temperature").get<float>();
  }
  if (Present(j, "top_k")) {
    QKV_ASSIGN_OR_RETURN(int64_t k, GetInt(j, "top_k", origin, std::nullopt, 0));
    g.top_k = static_cast<int>(k);
  }
  if (Present(j, "top_p")) {
    QKV_ASSIGN_OR_RETURN(double p, GetPositive(j, "top_p", origin, std::nullopt));
    if (p > 1) return KeyError(origin, "top_p", "must be in (0, 1]");
    g.top_p = static_cast<float>(p);
  }
  if (Present(j, "max_length")) {
    QKV_ASSIGN_OR_RETURN(g.max_length, GetInt(j, "max_length", origin, std::nullopt, 1,
                                              std::numeric_limits<int64_t>::max()));
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view ModelArchName(ModelArch arch) {
  switch (arch) {
    case ModelArch::kLlama:
      return "llama";
    case ModelArch::kMistral:
      return "mistral";
    case ModelArch::kQwen2:
      return "qwen2";
  }
  return "?";
}

int64_t ModelConfig::context_limit() const {
  if (sliding_window.has_value() && *sliding_window < max_position_embeddings) {
    return *sliding_window;
  }
  return max_position_embeddings;
}

absl::StatusOr<ModelConfig> ModelConfig::FromJson(std::string_view config_json,
                                                  std::string_view config_origin,
                                                  std::string_view generation_json,
                                                  std::string_view generation_origin_sv) {
  const absl::string_view origin(config_origin.data(), config_origin.size());
  const absl::string_view generation_origin(generation_origin_sv.data(),
                                            generation_origin_sv.size());
  QKV_ASSIGN_OR_RETURN(Json j, ParseJson(config_json, origin));
  ModelConfig c;
  if (!Present(j, "model_type") || !j.at("model_type").is_string()) {
    return KeyError(origin, "model_type", "missing (expected llama, mistral or qwen2)");
  }
  const std::string type = j.at("model_type").get<std::string>();
  int64_t default_max_pos;
  if (type == "llama") {
    c.arch = ModelArch::kLlama;
    default_max_pos = 2048;
  } else if (type == "mistral") {
    c.arch = ModelArch::kMistral;
    default_max_pos = 4096 * 32;
  } else if (type == "qwen2") {
    c.arch = ModelArch::kQwen2;
    default_max_pos = 32768;
  } else {
    return KeyError(origin, "model_type",
                    absl::StrCat("unsupported '", type, "' (supported: llama, mistral, qwen2)"));
  }
  if (Present(j, "hidden_act") && j.at("hidden_act") != "silu") {
    return KeyError(origin, "hidden_act",
                    absl::StrCat("unsupported ", j.at("hidden_act").dump(), " (only silu)"));
  }
  QKV_ASSIGN_OR_RETURN(c.hidden_size, GetInt(j, "hidden_size", origin, std::nullopt));
  QKV_ASSIGN_OR_RETURN(c.intermediate_size, GetInt(j, "intermediate_size", origin, std::nullopt));
  QKV_ASSIGN_OR_RETURN(c.num_layers, GetInt(j, "num_hidden_layers", origin, std::nullopt));
  QKV_ASSIGN_OR_RETURN(c.num_heads, GetInt(j, "num_attention_heads", origin, std::nullopt));
  QKV_ASSIGN_OR_RETURN(c.num_kv_heads, GetInt(j, "num_key_value_heads", origin, c.num_heads));
  QKV_ASSIGN_OR_RETURN(c.vocab_size, GetInt(j, "vocab_size", origin, std::nullopt));
  if (c.num_heads % c.num_kv_heads != 0) {
    return KeyError(
        origin, "num_key_value_heads",
        absl::StrCat(c.num_kv_heads, " does not divide num_attention_heads ", c.num_heads));
  }
  if (!Present(j, "head_dim") && c.hidden_size % c.num_heads != 0) {
    return KeyError(origin, "num_attention_heads",
                    absl::StrCat(c.num_heads, " does not divide hidden_size ", c.hidden_size,
                                 " and there is no head_dim"));
  }
  QKV_ASSIGN_OR_RETURN(c.head_dim, GetInt(j, "head_dim", origin, c.hidden_size / c.num_heads));
  if (c.head_dim % 2 != 0) {
    return KeyError(origin, "head_dim", absl::StrCat(c.head_dim, " is odd (RoPE needs pairs)"));
  }
  QKV_ASSIGN_OR_RETURN(c.rms_norm_eps, GetPositive(j, "rms_norm_eps", origin, 1e-6));
  QKV_ASSIGN_OR_RETURN(c.rope_theta, GetPositive(j, "rope_theta", origin, 10000.0));
  QKV_ASSIGN_OR_RETURN(c.rope_scaling, ParseRopeScaling(j, origin));
  QKV_ASSIGN_OR_RETURN(c.max_position_embeddings,
                       GetInt(j, "max_position_embeddings", origin, default_max_pos, 1,
                              std::numeric_limits<int64_t>::max()));
  QKV_ASSIGN_OR_RETURN(c.tie_word_embeddings, GetBool(j, "tie_word_embeddings", origin, false));
  switch (c.arch) {
    case ModelArch::kLlama: {
      QKV_ASSIGN_OR_RETURN(bool attention_bias, GetBool(j, "attention_bias", origin, false));
      c.qkv_bias = c.o_bias = attention_bias;
      QKV_ASSIGN_OR_RETURN(c.mlp_bias, GetBool(j, "mlp_bias", origin, false));
      break;
    }
    case ModelArch::kMistral:
      // MistralConfig defaults sliding_window to 4096; null turns it off.
      if (!j.contains("sliding_window")) {
        c.sliding_window = 4096;
      } else if (Present(j, "sliding_window")) {
        QKV_ASSIGN_OR_RETURN(c.sliding_window, GetInt(j, "sliding_window", origin, std::nullopt, 1,
                                                      std::numeric_limits<int64_t>::max()));
      }
      break;
    case ModelArch::kQwen2: {
      c.qkv_bias = true;
      QKV_ASSIGN_OR_RETURN(bool use_window, GetBool(j, "use_sliding_window", origin, false));
      if (use_window) {
        QKV_ASSIGN_OR_RETURN(c.sliding_window, GetInt(j, "sliding_window", origin, 4096, 1,
                                                      std::numeric_limits<int64_t>::max()));
      }
      break;
    }
  }
  if (Present(j, "bos_token_id")) {
    QKV_ASSIGN_OR_RETURN(std::vector<int32_t> bos, GetIdList(j, "bos_token_id", origin));
    if (bos.size() != 1) return KeyError(origin, "bos_token_id", "expected one id");
    c.bos_token_id = bos[0];
  }
  QKV_ASSIGN_OR_RETURN(c.eos_token_ids, GetIdList(j, "eos_token_id", origin));
  QKV_RETURN_IF_ERROR(ParseGeneration(generation_json, generation_origin, c));
  for (int32_t id : c.generation.eos_token_ids) {
    if (id >= c.vocab_size) {
      return KeyError(generation_json.empty() ? origin : generation_origin, "eos_token_id",
                      absl::StrCat(id, " >= vocab_size ", c.vocab_size));
    }
  }
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromDirectory(const std::string& dir) {
  const std::string config_path = JoinPath(dir, "config.json");
  QKV_ASSIGN_OR_RETURN(std::string config_text, ReadFileToString(config_path));
  const std::string gen_path = JoinPath(dir, "generation_config.json");
  std::string gen_text;
  if (PathExists(gen_path)) {
    QKV_ASSIGN_OR_RETURN(gen_text, ReadFileToString(gen_path));
    if (gen_text.empty()) gen_text = "{}";
  }
  return FromJson(config_text, config_path, gen_text, gen_path);
}

}  // namespace qkvshare::agents

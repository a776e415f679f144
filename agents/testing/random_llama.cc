#include "agents/testing/random_llama.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/dtype.h"
#include "nlohmann/json.hpp"

namespace qkvshare::agents::testing {
namespace {

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in [-1, 1) with 24 random bits; exact float arithmetic.
float Uniform(uint64_t& state) {
  return static_cast<float>(SplitMix64(state) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

// IEEE binary16, round to nearest even (finite inputs).
uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u)
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {                                               // subnormal or zero
    float a;
    std::memcpy(&a, &abs, 4);
    // a * 2^24 rounded to nearest even integer = subnormal mantissa.
    uint32_t m = static_cast<uint32_t>(std::nearbyint(a * 16777216.0f));
    return static_cast<uint16_t>(sign | m);
  }
  uint32_t mant = abs + 0xc8000fffu + ((abs >> 13) & 1u);  // rebias exponent (-112 << 23) + round
  return static_cast<uint16_t>(sign | (mant >> 13));
}

// Bytes per element of dtypes written as zeros (anything but F32/F16/BF16).
size_t RawElemSize(const std::string& dtype) {
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL") return 1;
  if (dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "I64" || dtype == "U64" || dtype == "F64") return 8;
  return 2;
}

void AppendValue(std::string& out, const std::string& dtype, float v) {
  if (dtype != "F32" && dtype != "F16" && dtype != "BF16") {
    out.append(RawElemSize(dtype), '\0');
    return;
  }
  if (dtype == "F32") {
    char b[4];
    std::memcpy(b, &v, 4);
    out.append(b, 4);
    return;
  }
  uint16_t h = dtype == "BF16" ? FloatToBf16(v) : FloatToHalf(v);
  out.push_back(static_cast<char>(h & 0xff));
  out.push_back(static_cast<char>(h >> 8));
}

}  // namespace

std::string EncodeSafetensors(const std::vector<TensorData>& tensors) {
  std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
  std::string data;
  for (const TensorData& t : tensors) {
    size_t begin = data.size();
    for (float v : t.values) AppendValue(data, t.dtype, v);
    absl::StrAppend(&header, ",\"", t.name, "\":{\"dtype\":\"", t.dtype, "\",\"shape\":[",
                    absl::StrJoin(t.shape, ","), "],\"data_offsets\":[", begin, ",", data.size(),
                    "]}");
  }
  header += "}";
  while (header.size() % 8 != 0) header += ' ';
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

std::vector<TensorData> RandomLlamaTensors(const RandomLlamaSpec& s) {
  const int hd = s.head_dim > 0 ? s.head_dim : s.hidden / s.heads;
  const bool qkv_bias = s.model_type == "qwen2" || s.attention_bias;
  const bool o_bias = s.model_type == "llama" && s.attention_bias;
  uint64_t state = s.seed;
  std::vector<TensorData> out;
  auto add = [&](std::string name, std::vector<int64_t> shape, float lo_hi, float offset) {
    TensorData t{std::move(name), s.weight_dtype, shape, {}};
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    t.values.resize(n);
    for (float& v : t.values) v = offset + lo_hi * Uniform(state);
    out.push_back(std::move(t));
  };
  // U(-a, a) has std a / sqrt(3): a = scale * sqrt(3 / fan_in) gives std scale / sqrt(fan_in).
  auto matrix = [&](std::string name, int64_t rows, int64_t cols) {
    add(std::move(name), {rows, cols},
        s.weight_scale * static_cast<float>(std::sqrt(3.0 / static_cast<double>(cols))), 0.0f);
  };
  add("model.embed_tokens.weight", {s.vocab, s.hidden}, 1.0f, 0.0f);
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    add(p + "input_layernorm.weight", {s.hidden}, 0.2f, 1.0f);
    matrix(p + "self_attn.q_proj.weight", int64_t{s.heads} * hd, s.hidden);
    matrix(p + "self_attn.k_proj.weight", int64_t{s.kv_heads} * hd, s.hidden);
    matrix(p + "self_attn.v_proj.weight", int64_t{s.kv_heads} * hd, s.hidden);
    if (qkv_bias) {
      add(p + "self_attn.q_proj.bias", {int64_t{s.heads} * hd}, 0.2f, 0.0f);
      add(p + "self_attn.k_proj.bias", {int64_t{s.kv_heads} * hd}, 0.2f, 0.0f);
      add(p + "self_attn.v_proj.bias", {int64_t{s.kv_heads} * hd}, 0.2f, 0.0f);
    }
    matrix(p + "self_attn.o_proj.weight", s.hidden, int64_t{s.heads} * hd);
    if (o_bias) add(p + "self_attn.o_proj.bias", {s.hidden}, 0.2f, 0.0f);
    add(p + "post_attention_layernorm.weight", {s.hidden}, 0.2f, 1.0f);
    matrix(p + "mlp.gate_proj.weight", s.intermediate, s.hidden);
    matrix(p + "mlp.up_proj.weight", s.intermediate, s.hidden);
    matrix(p + "mlp.down_proj.weight", s.hidden, s.intermediate);
  }
  add("model.norm.weight", {s.hidden}, 0.2f, 1.0f);
  if (!s.tie) matrix("lm_head.weight", s.vocab, s.hidden);
  return out;
}

std::string RandomLlamaConfigJson(const RandomLlamaSpec& s) {
  std::ostringstream c;
  c << "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n"
    << "  \"model_type\": \"" << s.model_type << "\",\n"
    << "  \"hidden_size\": " << s.hidden << ",\n"
    << "  \"intermediate_size\": " << s.intermediate << ",\n"
    << "  \"num_hidden_layers\": " << s.layers << ",\n"
    << "  \"num_attention_heads\": " << s.heads << ",\n"
    << "  \"num_key_value_heads\": " << s.kv_heads << ",\n";
  if (s.head_dim > 0) c << "  \"head_dim\": " << s.head_dim << ",\n";
  c << "  \"vocab_size\": " << s.vocab << ",\n"
    << "  \"max_position_embeddings\": " << s.max_pos << ",\n"
    << "  \"hidden_act\": \"silu\",\n"
    << "  \"rms_norm_eps\": 1e-05,\n"
    << "  \"rope_theta\": " << absl::StrCat(s.rope_theta) << ",\n"
    << "  \"rope_scaling\": " << s.rope_scaling_json << ",\n";
  if (s.model_type == "llama") {
    c << "  \"attention_bias\": " << (s.attention_bias ? "true" : "false") << ",\n";
  }
  if (s.model_type == "mistral") c << "  \"sliding_window\": null,\n";
  c << "  \"tie_word_embeddings\": " << (s.tie ? "true" : "false") << ",\n"
    << "  \"bos_token_id\": 1,\n"
    << "  \"eos_token_id\": [" << absl::StrJoin(s.eos_ids, ", ") << "]\n}\n";
  return c.str();
}

absl::Status WriteRandomLlama(const std::string& dir, const RandomLlamaSpec& spec) {
  ::mkdir(dir.c_str(), 0755);
  absl::Status st = WriteFile(dir + "/config.json", RandomLlamaConfigJson(spec));
  if (!st.ok()) return st;
  st = WriteFile(dir + "/generation_config.json",
                 absl::StrCat("{\"eos_token_id\": [", absl::StrJoin(spec.eos_ids, ", "),
                              "], \"do_sample\": false}\n"));
  if (!st.ok()) return st;
  std::vector<TensorData> tensors = RandomLlamaTensors(spec);
  if (spec.shards <= 1) {
    st = WriteFile(dir + "/model.safetensors", EncodeSafetensors(tensors));
    if (!st.ok()) return st;
  } else {
    std::string index = "{\"metadata\": {}, \"weight_map\": {";
    size_t per_shard = (tensors.size() + spec.shards - 1) / spec.shards;
    for (int s = 0; s < spec.shards; ++s) {
      std::string file = absl::StrCat("model-", s + 1, "-of-", spec.shards, ".safetensors");
      std::vector<TensorData> part;
      for (size_t i = s * per_shard; i < std::min(tensors.size(), (s + 1) * per_shard); ++i) {
        absl::StrAppend(&index, i == 0 ? "" : ", ", "\"", tensors[i].name, "\": \"", file, "\"");
        part.push_back(tensors[i]);
      }
      st = WriteFile(dir + "/" + file, EncodeSafetensors(part));
      if (!st.ok()) return st;
    }
    st = WriteFile(dir + "/model.safetensors.index.json", index + "}}\n");
    if (!st.ok()) return st;
  }
  if (!spec.tokenizer_json_path.empty()) {
    std::ifstream in(spec.tokenizer_json_path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    if (!in) return absl::InternalError(absl::StrCat("cannot read ", spec.tokenizer_json_path));
    st = WriteFile(dir + "/tokenizer.json", text.str());
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::StatusOr<RandomLlamaSpec> RandomLlamaSpecFromJson(const std::string& json) {
  nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("random llama spec: not a JSON object");
  }
  RandomLlamaSpec s;
  try {
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& k = it.key();
      const nlohmann::json& v = it.value();
      if (k == "model_type")
        s.model_type = v.get<std::string>();
      else if (k == "hidden")
        s.hidden = v.get<int>();
      else if (k == "layers")
        s.layers = v.get<int>();
      else if (k == "heads")
        s.heads = v.get<int>();
      else if (k == "kv_heads")
        s.kv_heads = v.get<int>();
      else if (k == "intermediate")
        s.intermediate = v.get<int>();
      else if (k == "vocab")
        s.vocab = v.get<int>();
      else if (k == "head_dim")
        s.head_dim = v.get<int>();
      else if (k == "max_pos")
        s.max_pos = v.get<int64_t>();
      else if (k == "rope_theta")
        s.rope_theta = v.get<double>();
      else if (k == "rope_scaling")
        s.rope_scaling_json = v.dump();
      else if (k == "tie")
        s.tie = v.get<bool>();
      else if (k == "attention_bias")
        s.attention_bias = v.get<bool>();
      else if (k == "weight_dtype")
        s.weight_dtype = v.get<std::string>();
      else if (k == "shards")
        s.shards = v.get<int>();
      else if (k == "seed")
        s.seed = v.get<uint64_t>();
      else if (k == "weight_scale")
        s.weight_scale = v.get<float>();
      else if (k == "eos_ids")
        s.eos_ids = v.get<std::vector<int32_t>>();
      else
        return absl::InvalidArgumentError("random llama spec: unknown key '" + k + "'");
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(std::string("random llama spec: ") + e.what());
  }
  return s;
}

std::string TempDir(const std::string& name) {
  static std::atomic<int> counter{0};
  const char* base = std::getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(base != nullptr ? base : "/tmp", "/", name, "_", ::getpid(), "_",
                                 counter.fetch_add(1));
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

}  // namespace qkvshare::agents::testing

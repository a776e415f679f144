#include "agents/model_fingerprint.h"

#include <openssl/evp.h>

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace qkvshare::agents {
namespace {

constexpr char kVersionTag[] = "qkvshare-model-fingerprint-v1";
constexpr size_t kWindows = 4;
constexpr size_t kWindowBytes = 64;

std::string Num(double v) { return absl::StrFormat("%.17g", v); }

}  // namespace

std::string ModelFingerprint::Hex() const {
  std::string out;
  out.reserve(64);
  for (uint8_t b : bytes) absl::StrAppendFormat(&out, "%02x", b);
  return out;
}

std::string FingerprintConfigText(const ModelConfig& c) {
  std::string scaling;
  switch (c.rope_scaling.type) {
    case RopeScaling::Type::kNone:
      scaling = "none";
      break;
    case RopeScaling::Type::kLinear:
      scaling = absl::StrCat("linear,factor=", Num(c.rope_scaling.factor));
      break;
    case RopeScaling::Type::kLlama3:
      scaling = absl::StrCat(
          "llama3,factor=", Num(c.rope_scaling.factor),
          ",low_freq_factor=", Num(c.rope_scaling.low_freq_factor),
          ",high_freq_factor=", Num(c.rope_scaling.high_freq_factor),
          ",original_max_position_embeddings=", c.rope_scaling.original_max_position_embeddings);
      break;
  }
  std::string_view arch = ModelArchName(c.arch);
  return absl::StrCat("model_type=", std::string(arch), ";layers=", c.num_layers,
                      ";heads=", c.num_heads, ";kv_heads=", c.num_kv_heads,
                      ";head_dim=", c.head_dim, ";rope_theta=", Num(c.rope_theta),
                      ";rope_scaling=", scaling);
}

absl::StatusOr<ModelFingerprint> ComputeModelFingerprint(const ModelConfig& config,
                                                         std::string_view tokenizer_json,
                                                         const WeightFiles& weights) {
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("model fingerprint: SHA-256 init failed");
  }
  bool ok = true;
  // Every item is length-prefixed so that no two inputs concatenate alike.
  auto update = [&](const void* data, size_t n) {
    uint64_t len = n;
    ok &= EVP_DigestUpdate(ctx.get(), &len, sizeof len) == 1;
    if (n > 0) ok &= EVP_DigestUpdate(ctx.get(), data, n) == 1;
  };
  auto update_str = [&](std::string_view s) { update(s.data(), s.size()); };
  update_str(kVersionTag);
  update_str(FingerprintConfigText(config));
  update_str(tokenizer_json);
  for (const auto& [name, t] : weights.tensors()) {  // sorted by name
    update_str(absl::StrCat(name, ":", t->dtype_name, ":", t->ShapeString()));
  }
  for (const auto& [name, t] : weights.tensors()) {
    const auto* data = static_cast<const uint8_t*>(t->data);
    if (t->nbytes <= kWindows * kWindowBytes) {
      update(data, t->nbytes);
      continue;
    }
    const size_t last = t->nbytes - kWindowBytes;
    for (size_t w = 0; w < kWindows; ++w) {
      update(data + last * w / (kWindows - 1), kWindowBytes);
    }
  }
  ModelFingerprint fp;
  unsigned int len = 0;
  ok &= EVP_DigestFinal_ex(ctx.get(), fp.bytes.data(), &len) == 1 && len == fp.bytes.size();
  if (!ok) return absl::InternalError("model fingerprint: SHA-256 failed");
  return fp;
}

absl::StatusOr<ModelFingerprint> FingerprintWithWeightFormat(const ModelFingerprint& base,
                                                             std::string_view format) {
  std::string input(reinterpret_cast<const char*>(base.bytes.data()), base.bytes.size());
  input += "qkvshare-weights:";
  input += format;
  ModelFingerprint fp;
  unsigned int len = 0;
  if (EVP_Digest(input.data(), input.size(), fp.bytes.data(), &len, EVP_sha256(), nullptr) != 1 ||
      len != fp.bytes.size()) {
    return absl::InternalError("model fingerprint: SHA-256 failed");
  }
  return fp;
}

}  // namespace qkvshare::agents

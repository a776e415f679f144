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
constexpr char kGgufVersionTag[] = "qkvshare-model-fingerprint-gguf-v1";
constexpr size_t kWindows = 4;
constexpr size_t kWindowBytes = 64;

std::string Num(double v) { return absl::StrFormat("%.17g", v); }

// SHA-256 over length-prefixed items (so that no two inputs concatenate
// alike).
class Digest {
 public:
  Digest() : ctx_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) {
    ok_ = ctx_ != nullptr && EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1;
  }
  void Update(const void* data, size_t n) {
    if (!ok_) return;
    uint64_t len = n;
    ok_ &= EVP_DigestUpdate(ctx_.get(), &len, sizeof len) == 1;
    if (n > 0) ok_ &= EVP_DigestUpdate(ctx_.get(), data, n) == 1;
  }
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  // Up to kWindows windows of kWindowBytes at evenly spaced offsets (start
  // and end included), or all of a short buffer.
  void Sample(const void* data, size_t nbytes) {
    const auto* p = static_cast<const uint8_t*>(data);
    if (nbytes <= kWindows * kWindowBytes) {
      Update(p, nbytes);
      return;
    }
    const size_t last = nbytes - kWindowBytes;
    for (size_t w = 0; w < kWindows; ++w) Update(p + last * w / (kWindows - 1), kWindowBytes);
  }
  absl::StatusOr<ModelFingerprint> Finish() {
    ModelFingerprint fp;
    unsigned int len = 0;
    ok_ &=
        ok_ && EVP_DigestFinal_ex(ctx_.get(), fp.bytes.data(), &len) == 1 && len == fp.bytes.size();
    if (!ok_) return absl::InternalError("model fingerprint: SHA-256 failed");
    return fp;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
  bool ok_ = false;
};

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
  Digest d;
  d.Update(kVersionTag);
  d.Update(FingerprintConfigText(config));
  d.Update(tokenizer_json);
  for (const auto& [name, t] : weights.tensors()) {  // sorted by name
    d.Update(absl::StrCat(name, ":", t->dtype_name, ":", t->ShapeString()));
  }
  for (const auto& [name, t] : weights.tensors()) d.Sample(t->data, t->nbytes);
  return d.Finish();
}

absl::StatusOr<ModelFingerprint> ComputeGgufModelFingerprint(const ModelConfig& config,
                                                             std::string_view tokenizer_json,
                                                             const gguf::GgufFile& file) {
  Digest d;
  d.Update(kGgufVersionTag);
  d.Update(FingerprintConfigText(config));
  d.Update(tokenizer_json);
  for (const gguf::GgufTensor& t : file.tensors()) {
    d.Update(absl::StrCat(t.name, ":", gguf::GgmlTypeName(t.type), ":", t.DimsString()));
  }
  for (const gguf::GgufTensor& t : file.tensors()) d.Sample(t.data, t.nbytes);
  return d.Finish();
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

#include "cachecard/content_id.h"

#include <openssl/evp.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace qkvshare::cachecard {
namespace {

// Incremental SHA-256. OpenSSL only fails here on allocation failure, which
// is treated like any other allocation failure (abort).
class Hasher {
 public:
  Hasher() : ctx_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) {
    if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) std::abort();
  }
  void Update(const void* data, size_t n) {
    if (n > 0 && EVP_DigestUpdate(ctx_.get(), data, n) != 1) std::abort();
  }
  void U8(uint8_t v) { Update(&v, 1); }
  void U32(uint32_t v) {
    uint8_t b[4];
    for (int i = 0; i < 4; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    Update(b, sizeof b);
  }
  void U64(uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    Update(b, sizeof b);
  }
  // Little-endian u32 of each id, in chunks.
  void TokenIds(absl::Span<const int32_t> ids) {
    uint8_t buf[4096];
    size_t n = 0;
    for (int32_t id : ids) {
      const auto v = static_cast<uint32_t>(id);
      for (int i = 0; i < 4; ++i) buf[n++] = static_cast<uint8_t>(v >> (8 * i));
      if (n == sizeof buf) {
        Update(buf, n);
        n = 0;
      }
    }
    Update(buf, n);
  }
  Sha256 Final() {
    Sha256 out{};
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), out.data(), &len) != 1 || len != out.size()) std::abort();
    return out;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx_;
};

std::vector<Sha256> SectionDigests(const Card& card) {
  std::vector<Sha256> digests;
  for (const SegmentInfo& seg : card.metadata().segments) {
    for (const SectionRef& ref : seg.sections) digests.push_back(Sha256Of(card.section(ref)));
  }
  return digests;
}

// The encoding fields ContentCardId reads (raw_dtype only for kFull, group
// specs only for kQuantized).
bool SameSegmentEncoding(const SegmentInfo& a, const SegmentInfo& b) {
  if (a.first_token != b.first_token || a.num_tokens != b.num_tokens || a.mode != b.mode ||
      a.k_bits != b.k_bits || a.v_bits != b.v_bits || a.sections.size() != b.sections.size()) {
    return false;
  }
  if (a.mode == CardMode::kFull) return a.raw_dtype == b.raw_dtype;
  return a.k_group.axis == b.k_group.axis && a.k_group.group_size == b.k_group.group_size &&
         a.v_group.axis == b.v_group.axis && a.v_group.group_size == b.v_group.group_size;
}

}  // namespace

Sha256 Sha256Of(absl::Span<const uint8_t> bytes) {
  Hasher h;
  h.Update(bytes.data(), bytes.size());
  return h.Final();
}

std::string Sha256Hex(const Sha256& digest) {
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest.data()), digest.size()));
}

Sha256 DigestTokens(absl::Span<const int32_t> token_ids) {
  Hasher h;
  h.TokenIds(token_ids);
  return h.Final();
}

CardId ContentCardId(const CardMetadata& m, absl::Span<const Sha256> section_digests) {
  Hasher h;
  h.Update(kCardIdDomain, sizeof(kCardIdDomain));
  h.U32(m.format_version);
  h.Update(m.fingerprint.data(), m.fingerprint.size());
  h.Update(m.parent_id.bytes.data(), m.parent_id.bytes.size());
  h.U32(static_cast<uint32_t>(m.shape.num_layers));
  h.U32(static_cast<uint32_t>(m.shape.num_kv_heads));
  h.U32(static_cast<uint32_t>(m.shape.head_dim));
  h.U8(static_cast<uint8_t>(m.source_dtype));
  h.U64(static_cast<uint64_t>(m.first_token));
  h.U64(static_cast<uint64_t>(m.num_tokens));
  h.U32(static_cast<uint32_t>(m.segments.size()));
  h.TokenIds(m.token_ids);
  size_t next = 0;
  for (const SegmentInfo& seg : m.segments) {
    const bool quantized = seg.mode == CardMode::kQuantized;
    h.U64(static_cast<uint64_t>(seg.first_token));
    h.U64(static_cast<uint64_t>(seg.num_tokens));
    h.U8(static_cast<uint8_t>(seg.mode));
    h.U8(quantized ? 0 : static_cast<uint8_t>(seg.raw_dtype));
    h.U8(quantized ? static_cast<uint8_t>(seg.k_group.axis) : 0);
    h.U8(quantized ? static_cast<uint8_t>(seg.v_group.axis) : 0);
    h.U32(quantized ? static_cast<uint32_t>(seg.k_group.group_size) : 0);
    h.U32(quantized ? static_cast<uint32_t>(seg.v_group.group_size) : 0);
    h.Update(seg.k_bits.data(), seg.k_bits.size());
    h.Update(seg.v_bits.data(), seg.v_bits.size());
    for (const SectionRef& ref : seg.sections) {
      h.U64(ref.bytes);
      const Sha256& d = section_digests[next++];
      h.Update(d.data(), d.size());
    }
  }
  const Sha256 digest = h.Final();
  CardId id;
  std::memcpy(id.bytes.data(), digest.data(), id.bytes.size());
  if (id.IsZero()) id.bytes.back() = 1;  // zero means "no card"
  return id;
}

CardId ComputeContentId(const Card& card) {
  return ContentCardId(card.metadata(), SectionDigests(card));
}

absl::Status VerifyContentId(const Card& card) {
  const CardId content = ComputeContentId(card);
  if (content == card.id()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "card id ", card.id().ToHex(), " does not match its content (the content hashes to ",
      content.ToHex(), "): a forged or re-labelled card, or one written by another format"));
}

bool SameContent(const Card& a, const Card& b) {
  const CardMetadata& x = a.metadata();
  const CardMetadata& y = b.metadata();
  if (x.format_version != y.format_version || x.fingerprint != y.fingerprint ||
      x.parent_id != y.parent_id || !(x.shape == y.shape) || x.source_dtype != y.source_dtype ||
      x.first_token != y.first_token || x.num_tokens != y.num_tokens ||
      x.token_ids != y.token_ids || x.segments.size() != y.segments.size()) {
    return false;
  }
  for (size_t s = 0; s < x.segments.size(); ++s) {
    const SegmentInfo& sx = x.segments[s];
    const SegmentInfo& sy = y.segments[s];
    if (!SameSegmentEncoding(sx, sy)) return false;
    for (size_t i = 0; i < sx.sections.size(); ++i) {
      const absl::Span<const uint8_t> bx = a.section(sx.sections[i]);
      const absl::Span<const uint8_t> by = b.section(sy.sections[i]);
      if (bx.size() != by.size() || std::memcmp(bx.data(), by.data(), bx.size()) != 0) {
        return false;
      }
    }
  }
  return true;
}

}  // namespace qkvshare::cachecard

// dump_card: writes the dequantized float32 K/V of a .qkvcard as a NumPy
// .npy file, for cross-checking other decoders (the Python SDK's codec,
// python/qkvshare/codec.py) against the C++ one bit for bit.
//
//   dump_card CARD.qkvcard OUT.npy
//
// The card is read and fully validated (cachecard::ImportCard); every section
// of every segment is decoded with the same DecodeSection the injection uses,
// into a float32 KvCache. OUT.npy (format 1.0, little-endian '<f4', C order)
// has shape [num_layers, 2, num_kv_heads, num_tokens, head_dim]: index 1 is
// 0 for K and 1 for V, and the token axis covers the positions the card
// carries, [first_token, first_token + num_tokens) (a chained card's own
// tokens only). Exit status 0 on success, 1 on an invalid card or I/O error
// (message on stderr), 2 on bad usage.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "agents/kv_cache.h"
#include "base/dtype.h"
#include "cachecard/card.h"
#include "cachecard/card_file.h"
#include "cachecard/metadata.h"
#include "cachecard/section_codec.h"

namespace qkvshare::cachecard {
namespace {

// The .npy v1.0 preamble for a float32 C-order array of `shape`.
std::string NpyHeader(const std::vector<int64_t>& shape) {
  std::string dims;
  for (int64_t d : shape) absl::StrAppend(&dims, d, ", ");
  std::string dict =
      absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", dims, "), }");
  // magic (6) + version (2) + header length (2) + dict + '\n', padded to 64.
  const size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(dict.size() & 0xff));
  out.push_back(static_cast<char>(dict.size() >> 8));
  return out + dict;
}

absl::Status Dump(const std::string& in_path, const std::string& out_path) {
  absl::StatusOr<CardPtr> card = ImportCard(in_path);
  if (!card.ok()) return card.status();
  const CardMetadata& m = (*card)->metadata();
  const agents::KvShape& shape = m.shape;
  const int64_t total = m.total_tokens();
  absl::StatusOr<std::unique_ptr<agents::KvCache>> cache_or =
      agents::KvCache::Create(shape, DType::kF32, total, total);
  if (!cache_or.ok()) return cache_or.status();
  agents::KvCache& cache = **cache_or;
  for (const SegmentInfo& seg : m.segments) {
    for (int l = 0; l < shape.num_layers; ++l) {
      for (int side = 0; side < 2; ++side) {
        const SectionRef& ref = seg.sections[2 * l + side];
        absl::Status s = DecodeSection((*card)->section(ref), seg, l, side == 0, &cache);
        if (!s.ok()) return s;
      }
    }
  }
  const int64_t n = m.num_tokens;
  const int64_t d = shape.head_dim;
  std::FILE* f = std::fopen(out_path.c_str(), "wb");
  if (f == nullptr) return absl::NotFoundError(absl::StrCat("cannot create ", out_path));
  const std::string header = NpyHeader({shape.num_layers, 2, shape.num_kv_heads, n, d});
  bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size();
  for (int l = 0; l < shape.num_layers && ok; ++l) {
    for (int side = 0; side < 2 && ok; ++side) {
      const float* base = static_cast<const float*>(side == 0 ? cache.k_data(l) : cache.v_data(l));
      for (int h = 0; h < shape.num_kv_heads && ok; ++h) {
        const float* rows = base + h * cache.head_stride() + m.first_token * d;
        ok = std::fwrite(rows, sizeof(float), n * d, f) == static_cast<size_t>(n * d);
      }
    }
  }
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) return absl::DataLossError(absl::StrCat("write to ", out_path, " failed"));
  return absl::OkStatus();
}

}  // namespace
}  // namespace qkvshare::cachecard

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s CARD.qkvcard OUT.npy\n", argv[0]);
    return 2;
  }
  absl::Status s = qkvshare::cachecard::Dump(argv[1], argv[2]);
  if (!s.ok()) {
    std::fprintf(stderr, "dump_card: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}

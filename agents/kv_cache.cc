#include "agents/kv_cache.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"

namespace qkvshare::agents {
namespace {

constexpr int64_t kDefaultInitialCapacity = 256;
constexpr size_t kAlignment = 64;

char* AllocateAligned(size_t bytes) {
  size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  return static_cast<char*>(std::aligned_alloc(kAlignment, std::max<size_t>(rounded, kAlignment)));
}

}  // namespace

KvCache::KvCache(const KvShape& shape, DType dtype, int64_t max_tokens)
    : shape_(shape), dtype_(dtype), max_tokens_(max_tokens), data_(nullptr, &std::free) {}

KvCache::~KvCache() = default;

absl::StatusOr<std::unique_ptr<KvCache>> KvCache::Create(const KvShape& shape, DType dtype,
                                                         int64_t max_tokens,
                                                         int64_t initial_capacity) {
  if (shape.num_layers <= 0 || shape.num_kv_heads <= 0 || shape.head_dim <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvCache: dimensions must be positive (layers ", shape.num_layers,
                     ", kv heads ", shape.num_kv_heads, ", head_dim ", shape.head_dim, ")"));
  }
  if (max_tokens <= 0 || initial_capacity < 0 || initial_capacity > max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("KvCache: bad capacity (max_tokens ", max_tokens,
                                                   ", initial ", initial_capacity, ")"));
  }
  std::unique_ptr<KvCache> cache(new KvCache(shape, dtype, max_tokens));
  int64_t initial =
      initial_capacity > 0 ? initial_capacity : std::min(kDefaultInitialCapacity, max_tokens);
  absl::Status s = cache->Reserve(initial);
  if (!s.ok()) return s;
  return cache;
}

size_t KvCache::LayerBytes(int64_t capacity) const {
  return static_cast<size_t>(shape_.num_kv_heads) * capacity * shape_.head_dim * DTypeSize(dtype_);
}

size_t KvCache::allocated_bytes() const { return LayerBytes(capacity_) * 2 * shape_.num_layers; }

void* KvCache::LayerBase(int layer, int kv) const {
  return data_.get() + (static_cast<size_t>(layer) * 2 + kv) * LayerBytes(capacity_);
}

absl::Status KvCache::Reserve(int64_t tokens) {
  if (tokens <= capacity_) return absl::OkStatus();
  if (tokens > max_tokens_) {
    return absl::OutOfRangeError(
        absl::StrCat("KvCache: ", tokens, " tokens exceed the context limit of ", max_tokens_));
  }
  int64_t new_capacity = std::min(max_tokens_, std::max(tokens, capacity_ * 2));
  size_t layer_bytes = LayerBytes(new_capacity);
  char* fresh = AllocateAligned(layer_bytes * 2 * shape_.num_layers);
  if (fresh == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("KvCache: cannot allocate ",
                                                     layer_bytes * 2 * shape_.num_layers,
                                                     " bytes for ", new_capacity, " tokens"));
  }
  if (length_ > 0) {
    const size_t row = static_cast<size_t>(shape_.head_dim) * DTypeSize(dtype_);
    const size_t old_layer_bytes = LayerBytes(capacity_);
    for (int64_t part = 0; part < 2 * shape_.num_layers; ++part) {
      for (int h = 0; h < shape_.num_kv_heads; ++h) {
        std::memcpy(fresh + part * layer_bytes + h * new_capacity * row,
                    data_.get() + part * old_layer_bytes + h * capacity_ * row, length_ * row);
      }
    }
  }
  data_.reset(fresh);
  capacity_ = new_capacity;
  return absl::OkStatus();
}

absl::Status KvCache::SetLength(int64_t n) {
  if (n < 0 || n > capacity_) {
    return absl::OutOfRangeError(
        absl::StrCat("KvCache: length ", n, " outside capacity ", capacity_));
  }
  length_ = n;
  return absl::OkStatus();
}

void KvCache::Truncate(int64_t n) { length_ = std::max<int64_t>(0, std::min(n, length_)); }

}  // namespace qkvshare::agents

#include "agents/kv_cache.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace qkvshare::agents {
namespace {

float* K(KvCache& c, int layer) { return static_cast<float*>(c.k_data(layer)); }
float* V(KvCache& c, int layer) { return static_cast<float*>(c.v_data(layer)); }

// Value written at (layer, kv, head, token, dim) so moves can be checked.
float Tag(int l, int kv, int h, int64_t t, int d) {
  return l * 100000.f + kv * 10000.f + h * 1000.f + t * 10.f + d;
}

TEST(KvCacheTest, CreateValidates) {
  EXPECT_EQ(KvCache::Create({0, 4, 8}, DType::kF32, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KvCache::Create({2, 4, 8}, DType::kF32, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(KvCache::Create({2, 4, 8}, DType::kF32, 16, 17).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto c = KvCache::Create({5, 4, 8}, DType::kBF16, 512);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->length(), 0);
  EXPECT_EQ((*c)->capacity(), 256);
  EXPECT_EQ((*c)->allocated_bytes(), 5u * 2 * 4 * 256 * 8 * 2);
}

TEST(KvCacheTest, GrowKeepsContentsInDocumentedLayout) {
  const KvShape shape{3, 2, 4};
  auto c = KvCache::Create(shape, DType::kF32, 100, 5).value();
  for (int l = 0; l < 3; ++l)
    for (int h = 0; h < 2; ++h)
      for (int t = 0; t < 5; ++t)
        for (int d = 0; d < 4; ++d) {
          K(*c, l)[(h * c->capacity() + t) * 4 + d] = Tag(l, 0, h, t, d);
          V(*c, l)[(h * c->capacity() + t) * 4 + d] = Tag(l, 1, h, t, d);
        }
  ASSERT_TRUE(c->SetLength(5).ok());
  ASSERT_TRUE(c->Reserve(7).ok());
  EXPECT_EQ(c->capacity(), 10);  // doubled
  EXPECT_EQ(c->head_stride(), 40);
  EXPECT_EQ(c->length(), 5);
  for (int l = 0; l < 3; ++l)
    for (int h = 0; h < 2; ++h)
      for (int t = 0; t < 5; ++t)
        for (int d = 0; d < 4; ++d) {
          ASSERT_EQ(K(*c, l)[h * c->head_stride() + t * 4 + d], Tag(l, 0, h, t, d));
          ASSERT_EQ(V(*c, l)[h * c->head_stride() + t * 4 + d], Tag(l, 1, h, t, d));
        }
}

TEST(KvCacheTest, LimitsAndTruncate) {
  auto c = KvCache::Create({1, 1, 8}, DType::kF32, 64, 8).value();
  EXPECT_EQ(c->Reserve(65).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(c->capacity(), 8);  // unchanged on error
  ASSERT_TRUE(c->Reserve(40).ok());
  EXPECT_EQ(c->capacity(), 40);
  ASSERT_TRUE(c->Reserve(41).ok());
  EXPECT_EQ(c->capacity(), 64);  // doubling is capped at max_tokens
  EXPECT_EQ(c->SetLength(65).code(), absl::StatusCode::kOutOfRange);
  ASSERT_TRUE(c->SetLength(30).ok());
  c->Truncate(50);
  EXPECT_EQ(c->length(), 30);
  c->Truncate(12);
  EXPECT_EQ(c->length(), 12);
  c->Truncate(-3);
  EXPECT_EQ(c->length(), 0);
}

}  // namespace
}  // namespace qkvshare::agents

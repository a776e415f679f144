#include "agents/gguf/gguf_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace qkvshare::agents::gguf {
namespace {

using ::testing::HasSubstr;

// Writes GGUF bytes field by field (little-endian, as on x86 and aarch64).
class Builder {
 public:
  template <typename T>
  Builder& Put(T v) {
    const char* p = reinterpret_cast<const char*>(&v);
    out_.append(p, sizeof v);
    return *this;
  }
  Builder& Str(const std::string& s) {
    Put<uint64_t>(s.size());
    out_ += s;
    return *this;
  }
  Builder& Header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    out_ += "GGUF";
    return Put(version).Put(n_tensors).Put(n_kv);
  }
  Builder& Key(const std::string& key, ValueType t) {
    Str(key);
    return Put(static_cast<uint32_t>(t));
  }
  Builder& TensorInfo(const std::string& name, std::vector<int64_t> dims, uint32_t type,
                      uint64_t offset) {
    Str(name);
    Put<uint32_t>(dims.size());
    for (int64_t d : dims) Put(d);
    return Put(type).Put(offset);
  }
  Builder& Align(size_t a) {
    while (out_.size() % a != 0) out_ += '\0';
    return *this;
  }
  Builder& Raw(const std::string& s) {
    out_ += s;
    return *this;
  }
  std::string& bytes() { return out_; }

 private:
  std::string out_;
};

// A valid file: every value type, a nested array, alignment 64, two tensors
// (f32 [3, 2] and q8_0 [32, 1]).
std::string ValidFile() {
  Builder b;
  b.Header(3, 2, 16);
  b.Key("u8", ValueType::kUint8).Put<uint8_t>(200);
  b.Key("i8", ValueType::kInt8).Put<int8_t>(-5);
  b.Key("u16", ValueType::kUint16).Put<uint16_t>(60000);
  b.Key("i16", ValueType::kInt16).Put<int16_t>(-30000);
  b.Key("u32", ValueType::kUint32).Put<uint32_t>(4000000000u);
  b.Key("i32", ValueType::kInt32).Put<int32_t>(-2000000000);
  b.Key("f32", ValueType::kFloat32).Put<float>(1.5f);
  b.Key("bool", ValueType::kBool).Put<uint8_t>(1);
  b.Key("str", ValueType::kString).Str("héllo");
  b.Key("u64", ValueType::kUint64).Put<uint64_t>(uint64_t{1} << 40);
  b.Key("i64", ValueType::kInt64).Put<int64_t>(-(int64_t{1} << 40));
  b.Key("f64", ValueType::kFloat64).Put<double>(0.1);
  b.Key("strs", ValueType::kArray).Put(static_cast<uint32_t>(ValueType::kString)).Put<uint64_t>(3);
  b.Str("a").Str("").Str("ccc");
  b.Key("floats", ValueType::kArray)
      .Put(static_cast<uint32_t>(ValueType::kFloat32))
      .Put<uint64_t>(2)
      .Put<float>(-1.0f)
      .Put<float>(2.5f);
  // [[1, 2], [3]] as int32.
  b.Key("nested", ValueType::kArray).Put(static_cast<uint32_t>(ValueType::kArray)).Put<uint64_t>(2);
  b.Put(static_cast<uint32_t>(ValueType::kInt32)).Put<uint64_t>(2).Put<int32_t>(1).Put<int32_t>(2);
  b.Put(static_cast<uint32_t>(ValueType::kInt32)).Put<uint64_t>(1).Put<int32_t>(3);
  b.Key("general.alignment", ValueType::kUint32).Put<uint32_t>(64);
  b.TensorInfo("w", {3, 2}, 0, 0);
  b.TensorInfo("q", {32, 1}, 8, 64);
  b.Align(64);
  for (int i = 0; i < 6; ++i) b.Put<float>(static_cast<float>(i) + 0.5f);
  b.Align(64);
  b.Put<uint16_t>(0x3c00);  // d = 1
  for (int i = 0; i < 32; ++i) b.Put<int8_t>(static_cast<int8_t>(i - 16));
  return b.bytes();
}

TEST(GgufFileTest, ParsesEveryValueTypeAndTensors) {
  auto file = GgufFile::FromBytes(ValidFile(), "valid.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& g = **file;
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 64u);
  EXPECT_EQ(*g.GetInt("u8"), 200);
  EXPECT_EQ(*g.GetInt("i8"), -5);
  EXPECT_EQ(*g.GetInt("u16"), 60000);
  EXPECT_EQ(*g.GetInt("i16"), -30000);
  EXPECT_EQ(*g.GetInt("u32"), 4000000000LL);
  EXPECT_EQ(*g.GetInt("i32"), -2000000000);
  EXPECT_EQ(*g.GetFloat("f32"), 1.5);
  EXPECT_EQ(*g.GetInt("bool"), 1);
  EXPECT_EQ(*g.GetString("str"), "héllo");
  EXPECT_EQ(*g.GetInt("u64"), int64_t{1} << 40);
  EXPECT_EQ(*g.GetInt("i64"), -(int64_t{1} << 40));
  EXPECT_EQ(*g.GetFloat("f64"), 0.1);
  EXPECT_EQ(*g.GetFloat("u32"), 4e9);  // integers read as numbers too
  EXPECT_THAT(**g.GetStringArray("strs"), ::testing::ElementsAre("a", "", "ccc"));
  EXPECT_THAT(**g.GetFloatArray("floats"), ::testing::ElementsAre(-1.0, 2.5));
  const Value* nested = g.Find("nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->arrays.size(), 2u);
  EXPECT_THAT(nested->arrays[0].ints, ::testing::ElementsAre(1, 2));
  EXPECT_THAT(nested->arrays[1].ints, ::testing::ElementsAre(3));

  EXPECT_EQ(g.GetInt("missing").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(g.GetInt("str").status().message(),
              HasSubstr("'str' is string, expected an integer"));
  EXPECT_THAT(g.GetStringArray("floats").status().message(), HasSubstr("array of float32"));

  ASSERT_EQ(g.tensors().size(), 2u);
  const GgufTensor* w = g.FindTensor("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->type, GgmlType::kF32);
  EXPECT_EQ(w->DimsString(), "[3, 2]");
  EXPECT_EQ(w->numel, 6);
  EXPECT_EQ(w->rows(), 2);
  EXPECT_EQ(w->nbytes, 24u);
  EXPECT_EQ(g.data_offset() % 64, 0u);
  float v[6];
  std::memcpy(v, w->data, sizeof v);
  EXPECT_EQ(v[0], 0.5f);
  EXPECT_EQ(v[5], 5.5f);
  const GgufTensor* q = g.FindTensor("q");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, GgmlType::kQ8_0);
  EXPECT_EQ(q->nbytes, 34u);
  EXPECT_EQ(q->data, w->data + 64);
  EXPECT_EQ(static_cast<int8_t>(q->data[2]), -16);
  EXPECT_EQ(static_cast<int8_t>(q->data[33]), 15);
  EXPECT_EQ(g.FindTensor("nope"), nullptr);
}

TEST(GgufFileTest, EveryTruncationIsAnError) {
  const std::string full = ValidFile();
  for (size_t n = 0; n < full.size(); ++n) {
    auto file = GgufFile::FromBytes(full.substr(0, n), "cut.gguf");
    ASSERT_FALSE(file.ok()) << "prefix of " << n << " bytes parsed";
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_THAT(file.status().message(), HasSubstr("cut.gguf")) << n;
  }
}

TEST(GgufFileTest, RandomCorruptionNeverCrashes) {
  const std::string full = ValidFile();
  std::mt19937 rng(1234);
  int parsed = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bytes = full;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      bytes[rng() % bytes.size()] = static_cast<char>(rng() & 0xFF);
    }
    auto file = GgufFile::FromBytes(bytes, "fuzz.gguf");
    if (!file.ok()) {
      EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
      continue;
    }
    ++parsed;
    for (const GgufTensor& t : (*file)->tensors()) {  // every tensor inside the buffer
      const uint8_t* begin = reinterpret_cast<const uint8_t*>(bytes.data());
      (void)begin;
      EXPECT_LE(t.offset + t.nbytes + (*file)->data_offset(), bytes.size());
    }
  }
  // Flips in tensor data or string contents leave a valid file.
  EXPECT_GT(parsed, 0);
}

struct Hostile {
  std::string name;
  std::string bytes;
  std::string message;
};

std::vector<Hostile> HostileFiles() {
  std::vector<Hostile> h;
  {
    Builder b;
    b.Raw("GGML").Put<uint32_t>(3).Put<uint64_t>(0).Put<uint64_t>(0);
    h.push_back({"bad magic", b.bytes(), "not a GGUF file"});
  }
  {
    Builder b;
    b.Header(1, 0, 0);
    h.push_back({"version 1", b.bytes(), "unsupported GGUF version 1"});
  }
  {
    Builder b;
    b.Header(0x03000000, 0, 0);
    h.push_back({"big endian", b.bytes(), "big-endian"});
  }
  {
    Builder b;
    b.Header(3, uint64_t{1} << 60, 0);
    h.push_back({"huge tensor count", b.bytes(), "tensor count 1152921504606846976"});
  }
  {
    Builder b;
    b.Header(3, 0, uint64_t{1} << 62);
    h.push_back({"huge kv count", b.bytes(), "metadata count"});
  }
  {
    Builder b;
    b.Header(3, 0, 1).Put<uint64_t>(uint64_t{1} << 40).Raw("key-and-some-more-bytes");
    h.push_back({"huge key length", b.bytes(), "has length 1099511627776"});
  }
  {
    Builder b;
    b.Header(3, 0, 1).Key("k", static_cast<ValueType>(13)).Put<uint32_t>(0);
    h.push_back({"unknown value type", b.bytes(), "metadata 'k': unknown value type 13"});
  }
  {
    Builder b;
    b.Header(3, 0, 1).Key("k", ValueType::kArray).Put<uint32_t>(99).Put<uint64_t>(0);
    h.push_back({"unknown element type", b.bytes(), "unknown array element type 99"});
  }
  {
    Builder b;
    b.Header(3, 0, 1)
        .Key("k", ValueType::kArray)
        .Put<uint32_t>(static_cast<uint32_t>(ValueType::kInt32))
        .Put<uint64_t>(uint64_t{1} << 61)
        .Put<int32_t>(1);
    h.push_back({"huge array", b.bytes(), "past the end of the file"});
  }
  {
    Builder b;
    b.Header(3, 0, 1).Key("k", ValueType::kBool).Put<uint8_t>(7);
    h.push_back({"bad bool", b.bytes(), "bool value 7"});
  }
  {
    Builder b;
    b.Header(3, 0, 1).Key("k", ValueType::kArray);
    for (int d = 0; d < 10; ++d) {
      b.Put<uint32_t>(static_cast<uint32_t>(ValueType::kArray)).Put<uint64_t>(1);
    }
    b.Put<uint32_t>(0).Put<uint64_t>(0);
    h.push_back({"deep nesting", b.bytes(), "nested deeper than 8"});
  }
  {
    Builder b;
    b.Header(3, 0, 2).Key("k", ValueType::kUint8).Put<uint8_t>(1);
    b.Key("k", ValueType::kUint8).Put<uint8_t>(2);
    h.push_back({"duplicate key", b.bytes(), "duplicate metadata key 'k'"});
  }
  {
    Builder b;
    b.Header(3, 0, 1).Key("general.alignment", ValueType::kUint32).Put<uint32_t>(48);
    h.push_back({"alignment not power of two", b.bytes(), "48 is not a power of two"});
  }
  {
    Builder b;
    b.Header(3, 0, 1).Key("general.alignment", ValueType::kUint32).Put<uint32_t>(0);
    h.push_back({"alignment zero", b.bytes(), "0 is not a power of two"});
  }
  {
    Builder b;
    b.Header(3, 0, 1).Key("general.alignment", ValueType::kString).Str("32");
    h.push_back({"alignment string", b.bytes(), "general.alignment is string"});
  }
  {
    Builder b;
    b.Header(3, 1, 0).TensorInfo("t", {1, 1, 1, 1, 1}, 0, 0);
    h.push_back({"five dims", b.bytes(), "tensor 't': 5 dims"});
  }
  {
    Builder b;
    b.Header(3, 1, 0).TensorInfo("t", {4, -1}, 0, 0);
    h.push_back({"negative dim", b.bytes(), "dim 1 is negative"});
  }
  {
    Builder b;
    b.Header(3, 1, 0).TensorInfo("t", {int64_t{1} << 40, int64_t{1} << 40}, 0, 0);
    h.push_back({"overflowing shape", b.bytes(), "element count overflows int64"});
  }
  {
    Builder b;
    b.Header(3, 1, 0).TensorInfo("t", {int64_t{1} << 40, 1}, 0, 0);
    h.push_back({"larger than file", b.bytes(), "is larger than the file"});
  }
  {
    Builder b;
    b.Header(3, 1, 0).TensorInfo("t", {32}, 77, 0);
    h.push_back({"unknown tensor type", b.bytes(), "tensor 't': unknown ggml tensor type 77"});
  }
  {
    Builder b;
    b.Header(3, 1, 0).TensorInfo("t", {48, 2}, 8, 0);
    h.push_back({"row not a block multiple", b.bytes(), "row length 48 is not a multiple of"});
  }
  {
    Builder b;
    b.Header(3, 1, 0).TensorInfo("t", {4}, 0, 8);
    h.push_back({"misaligned offset", b.bytes(), "data offset 8 is not a multiple"});
  }
  {
    Builder b;
    b.Header(3, 1, 0).TensorInfo("t", {8}, 0, 0).Align(32).Put<float>(1);
    h.push_back({"tensor past end", b.bytes(), "past the end of the data section"});
  }
  {
    Builder b;
    b.Header(3, 2, 0).TensorInfo("a", {16}, 0, 0).TensorInfo("b", {16}, 0, 32).Align(32);
    b.Raw(std::string(96, '\0'));
    h.push_back({"overlap", b.bytes(), "tensors 'a' and 'b' overlap"});
  }
  {
    Builder b;
    b.Header(3, 2, 0).TensorInfo("a", {4}, 0, 0).TensorInfo("a", {4}, 0, 32).Align(32);
    b.Raw(std::string(64, '\0'));
    h.push_back({"duplicate tensor", b.bytes(), "duplicate tensor name 'a'"});
  }
  return h;
}

TEST(GgufFileTest, HostileFilesAreRejectedWithReasons) {
  for (const Hostile& h : HostileFiles()) {
    auto file = GgufFile::FromBytes(h.bytes, "bad.gguf");
    ASSERT_FALSE(file.ok()) << h.name;
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << h.name;
    EXPECT_THAT(file.status().message(), HasSubstr(h.message)) << h.name;
    EXPECT_THAT(file.status().message(), HasSubstr("bad.gguf")) << h.name;
  }
}

TEST(GgufFileTest, OpenMissingFileIsNotFound) {
  auto file = GgufFile::Open("/nonexistent/model.gguf");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
}

// A FIFO or a directory named like a model is refused at once (opening a
// FIFO used to block until a writer came).
TEST(GgufFileTest, OpenRefusesFifoAndDirectoryWithoutBlocking) {
  const std::string dir = ::testing::TempDir() + "/gguf_open_test";
  ::mkdir(dir.c_str(), 0700);
  const std::string fifo = dir + "/model.gguf";
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0) << std::strerror(errno);
  absl::StatusOr<std::unique_ptr<GgufFile>> f = GgufFile::Open(fifo);
  ASSERT_FALSE(f.ok());
  EXPECT_THAT(std::string(f.status().message()), ::testing::HasSubstr("not a regular file"));
  absl::StatusOr<std::unique_ptr<GgufFile>> d = GgufFile::Open(dir);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), ::testing::HasSubstr("a directory"));
  ::unlink(fifo.c_str());
}

TEST(GgufFileTest, OpenMapsTheBundledFile) {
  auto file = GgufFile::Open("agents/gguf/testdata/stories260K-F32.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*(*file)->GetString("general.architecture"), "llama");
  EXPECT_EQ((*file)->tensors().size(), 47u);
  const GgufTensor* e = (*file)->FindTensor("token_embd.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->DimsString(), "[64, 512]");
}

TEST(GgmlTypeTest, KnownTypes) {
  EXPECT_EQ(GgmlTypeInfo(8)->block_bytes, 34);
  EXPECT_EQ(GgmlTypeInfo(14)->block_bytes, 210);
  EXPECT_EQ(GgmlTypeInfo(12)->block_size, 256);
  EXPECT_FALSE(GgmlTypeInfo(4).has_value());  // removed Q4_2
  EXPECT_EQ(GgmlTypeName(GgmlType::kQ4_K), "q4_K");
}

}  // namespace
}  // namespace qkvshare::agents::gguf

// File: agents/gguf/gguf_file.h
// -----------------------------------------------------------------------------
// GgufFile: a read-only, memory-mapped GGUF file (the llama.cpp / Ollama
// model container, versions 2 and 3, little-endian), parsed and validated
// completely before anything is used. Torch-free.
//
// Layout (ggml docs/gguf.md): magic "GGUF", uint32 version, uint64 tensor
// count, uint64 metadata count; metadata key/value pairs (key: uint64 length
// + UTF-8 bytes; uint32 value type; value: one of 13 types, arrays of any of
// them, nested arrays included); tensor infos (name, uint32 n_dims <= 4,
// uint64 dims with dims[0] the innermost (row length), uint32 ggml type,
// uint64 offset); padding to `general.alignment` (default 32); the data
// section, each tensor at its offset (a multiple of the alignment) from the
// start of the section.
//
// Validation (each failure is InvalidArgument naming the file, the byte
// offset and the key or tensor; the parser never aborts and never reads past
// the end, whatever the input): bad magic, unsupported version (1, or a
// big-endian file), truncation anywhere, counts larger than the bytes left,
// strings past the end, unknown value types, array nesting deeper than 8,
// duplicate keys or tensor names, general.alignment not a power of two or of
// the wrong type, more than 4 dims, a dim < 0 or an element count overflowing
// int64, an unknown ggml type, a row length not a multiple of the type's
// block size, a misaligned offset, a tensor past the end of the file, two
// tensors overlapping.
//
// Lifecycle: Open() / FromBytes() -> read -> destroy (unmaps). Thread
// safety: immutable after creation; const methods may be called concurrently.
//
// Example:
//   QKV_ASSIGN_OR_RETURN(auto gguf, gguf::GgufFile::Open("model.gguf"));
//   QKV_ASSIGN_OR_RETURN(int64_t layers, gguf->GetInt("llama.block_count"));
//   const gguf::GgufTensor* t = gguf->FindTensor("token_embd.weight");
#ifndef QKVSHARE_AGENTS_GGUF_GGUF_FILE_H_
#define QKVSHARE_AGENTS_GGUF_GGUF_FILE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace qkvshare::agents::gguf {

// GGUF metadata value types (gguf_type).
enum class ValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// "uint8", ..., "float64"; "type N" for other values.
std::string ValueTypeName(ValueType t);

// One metadata value. Scalars: integers (and bool) in `i` (uint64 values
// above INT64_MAX keep their bit pattern), floats in `f`, strings in `s`.
// Arrays (type kArray): `element_type` and `size` elements, stored by kind
// in exactly one of `ints` (integer and bool elements), `floats`, `strings`
// or `arrays` (nested arrays).
struct Value {
  ValueType type = ValueType::kUint8;
  int64_t i = 0;
  double f = 0;
  std::string s;
  ValueType element_type = ValueType::kUint8;
  uint64_t size = 0;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;
  std::vector<Value> arrays;

  bool is_integer() const;  // an integer or bool scalar
  bool is_float() const;    // float32 / float64 scalar
};

// ggml tensor types (enum ggml_type) as stored in GGUF tensor infos. Every
// type the llama.cpp snapshot 84f7129 defines is known (block size and
// bytes), so any valid file's layout is checked; which ones the runtime can
// load is decided by the model loader (agents/gguf/gguf_model.h).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
  kNVFP4 = 40,
  kQ1_0 = 41,
  kQ2_0 = 42,
};

struct GgmlTypeTraits {
  const char* name;     // "f32", "q8_0", ... (ggml's names)
  int64_t block_size;   // elements per block
  int64_t block_bytes;  // bytes per block
};

// Traits of a ggml type id, nullopt for an id this reader does not know.
std::optional<GgmlTypeTraits> GgmlTypeInfo(uint32_t type_id);
// The ggml name of `t` ("q4_0").
std::string GgmlTypeName(GgmlType t);

struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::kF32;
  // GGUF order: dims[0] is the row length (innermost, contiguous), e.g. a
  // [out, in] nn.Linear weight has dims {in, out}.
  std::vector<int64_t> dims;
  int64_t numel = 0;
  // Offset from the start of the data section, and size in bytes.
  uint64_t offset = 0;
  size_t nbytes = 0;
  // Start of the data (read-only mapping), valid while the GgufFile lives.
  const uint8_t* data = nullptr;

  int64_t row_length() const { return dims.empty() ? 1 : dims[0]; }
  int64_t rows() const { return row_length() == 0 ? 0 : numel / row_length(); }
  // "[64, 512]" (GGUF order).
  std::string DimsString() const;
};

class GgufFile {
 public:
  // Maps and validates `path`. Errors: NotFound when missing; InvalidArgument
  // as in the file comment.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Same over a copy of `bytes`; `origin` names it in errors (tests).
  static absl::StatusOr<std::unique_ptr<GgufFile>> FromBytes(std::string bytes, std::string origin);

  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;
  ~GgufFile();

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  // Offset of the data section in the file.
  uint64_t data_offset() const { return data_offset_; }
  size_t file_bytes() const { return size_; }
  // True for a memory-mapped file (Open), false for FromBytes.
  bool mapped() const { return mapping_ != nullptr; }

  // Metadata by key.
  const std::map<std::string, Value, std::less<>>& metadata() const { return metadata_; }
  const Value* Find(std::string_view key) const;
  // Typed getters. Errors: NotFound "<path>: metadata key 'K' not found";
  // InvalidArgument naming the key when the type does not fit (GetInt: any
  // integer type; GetFloat: float or integer; GetString: string;
  // Get*Array: an array of the named kind).
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;
  absl::StatusOr<double> GetFloat(std::string_view key) const;
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<const std::vector<std::string>*> GetStringArray(std::string_view key) const;
  absl::StatusOr<const std::vector<double>*> GetFloatArray(std::string_view key) const;
  absl::StatusOr<const std::vector<int64_t>*> GetIntArray(std::string_view key) const;

  // Tensors in file order, and by name (nullptr when absent).
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* FindTensor(std::string_view name) const;

 private:
  GgufFile() = default;
  absl::Status Parse();

  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  void* mapping_ = nullptr;  // mmap'ed (Open) or null (FromBytes)
  std::string owned_;        // FromBytes
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, Value, std::less<>> metadata_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace qkvshare::agents::gguf

#endif  // QKVSHARE_AGENTS_GGUF_GGUF_FILE_H_

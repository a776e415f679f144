#include "agents/gguf/gguf_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "base/status_macros.h"

namespace qkvshare::agents::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr int kMaxDims = 4;
constexpr int kMaxArrayDepth = 8;

struct TypeRow {
  uint32_t id;
  GgmlTypeTraits traits;
};

// ggml type_traits of llama.cpp 84f7129 (ggml/src/ggml.c, block structs of
// ggml-common.h).
constexpr TypeRow kTypes[] = {
    {0, {"f32", 1, 4}},         {1, {"f16", 1, 2}},         {2, {"q4_0", 32, 18}},
    {3, {"q4_1", 32, 20}},      {6, {"q5_0", 32, 22}},      {7, {"q5_1", 32, 24}},
    {8, {"q8_0", 32, 34}},      {9, {"q8_1", 32, 36}},      {10, {"q2_K", 256, 84}},
    {11, {"q3_K", 256, 110}},   {12, {"q4_K", 256, 144}},   {13, {"q5_K", 256, 176}},
    {14, {"q6_K", 256, 210}},   {15, {"q8_K", 256, 292}},   {16, {"iq2_xxs", 256, 66}},
    {17, {"iq2_xs", 256, 74}},  {18, {"iq3_xxs", 256, 98}}, {19, {"iq1_s", 256, 50}},
    {20, {"iq4_nl", 32, 18}},   {21, {"iq3_s", 256, 110}},  {22, {"iq2_s", 256, 82}},
    {23, {"iq4_xs", 256, 136}}, {24, {"i8", 1, 1}},         {25, {"i16", 1, 2}},
    {26, {"i32", 1, 4}},        {27, {"i64", 1, 8}},        {28, {"f64", 1, 8}},
    {29, {"iq1_m", 256, 56}},   {30, {"bf16", 1, 2}},       {34, {"tq1_0", 256, 54}},
    {35, {"tq2_0", 256, 66}},   {39, {"mxfp4", 32, 17}},    {40, {"nvfp4", 64, 36}},
    {41, {"q1_0", 128, 18}},    {42, {"q2_0", 64, 18}},
};

bool IsIntegerType(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kUint16:
    case ValueType::kInt16:
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kBool:
      return true;
    default:
      return false;
  }
}

bool IsFloatType(ValueType t) { return t == ValueType::kFloat32 || t == ValueType::kFloat64; }

// Bytes of one scalar of a fixed-size type, 0 for string/array/unknown.
size_t ScalarBytes(ValueType t) {
  switch (t) {
    case ValueType::kUint8:
    case ValueType::kInt8:
    case ValueType::kBool:
      return 1;
    case ValueType::kUint16:
    case ValueType::kInt16:
      return 2;
    case ValueType::kUint32:
    case ValueType::kInt32:
    case ValueType::kFloat32:
      return 4;
    case ValueType::kUint64:
    case ValueType::kInt64:
    case ValueType::kFloat64:
      return 8;
    default:
      return 0;
  }
}

bool KnownValueType(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::kFloat64); }

// Bounds-checked little-endian reader over [base, base + size).
class Reader {
 public:
  Reader(const uint8_t* base, size_t size, const std::string& origin)
      : base_(base), size_(size), origin_(origin) {}

  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }

  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(origin_, ": offset ", pos_, ": ", what));
  }

  absl::Status Bytes(void* out, size_t n, absl::string_view what) {
    if (n > left()) {
      return Error(
          absl::StrCat("truncated file: ", what, " needs ", n, " bytes, ", left(), " left"));
    }
    std::memcpy(out, base_ + pos_, n);
    pos_ += n;
    return absl::OkStatus();
  }
  template <typename T>
  absl::StatusOr<T> Get(absl::string_view what) {
    T v;
    QKV_RETURN_IF_ERROR(Bytes(&v, sizeof v, what));
    return v;
  }
  absl::StatusOr<std::string> String(absl::string_view what) {
    QKV_ASSIGN_OR_RETURN(uint64_t n, Get<uint64_t>(what));
    if (n > left()) {
      return Error(
          absl::StrCat("truncated file: ", what, " has length ", n, ", ", left(), " bytes left"));
    }
    std::string s(reinterpret_cast<const char*>(base_ + pos_), n);
    pos_ += n;
    return s;
  }

  // One scalar of type t into v (integers/bool -> i, floats -> f).
  absl::Status Scalar(ValueType t, int64_t* i, double* f, absl::string_view what) {
    switch (t) {
      case ValueType::kUint8: {
        QKV_ASSIGN_OR_RETURN(uint8_t x, Get<uint8_t>(what));
        *i = x;
        return absl::OkStatus();
      }
      case ValueType::kInt8: {
        QKV_ASSIGN_OR_RETURN(int8_t x, Get<int8_t>(what));
        *i = x;
        return absl::OkStatus();
      }
      case ValueType::kBool: {
        QKV_ASSIGN_OR_RETURN(uint8_t x, Get<uint8_t>(what));
        if (x > 1) return Error(absl::StrCat(what, ": bool value ", int{x}, " is not 0 or 1"));
        *i = x;
        return absl::OkStatus();
      }
      case ValueType::kUint16: {
        QKV_ASSIGN_OR_RETURN(uint16_t x, Get<uint16_t>(what));
        *i = x;
        return absl::OkStatus();
      }
      case ValueType::kInt16: {
        QKV_ASSIGN_OR_RETURN(int16_t x, Get<int16_t>(what));
        *i = x;
        return absl::OkStatus();
      }
      case ValueType::kUint32: {
        QKV_ASSIGN_OR_RETURN(uint32_t x, Get<uint32_t>(what));
        *i = x;
        return absl::OkStatus();
      }
      case ValueType::kInt32: {
        QKV_ASSIGN_OR_RETURN(int32_t x, Get<int32_t>(what));
        *i = x;
        return absl::OkStatus();
      }
      case ValueType::kUint64: {
        QKV_ASSIGN_OR_RETURN(uint64_t x, Get<uint64_t>(what));
        *i = static_cast<int64_t>(x);
        return absl::OkStatus();
      }
      case ValueType::kInt64: {
        QKV_ASSIGN_OR_RETURN(int64_t x, Get<int64_t>(what));
        *i = x;
        return absl::OkStatus();
      }
      case ValueType::kFloat32: {
        QKV_ASSIGN_OR_RETURN(float x, Get<float>(what));
        *f = x;
        return absl::OkStatus();
      }
      case ValueType::kFloat64: {
        QKV_ASSIGN_OR_RETURN(double x, Get<double>(what));
        *f = x;
        return absl::OkStatus();
      }
      default:
        return Error(absl::StrCat(what, ": not a scalar type"));
    }
  }

  absl::Status ReadValue(ValueType type, Value* v, int depth, const std::string& what) {
    v->type = type;
    if (type == ValueType::kString) {
      QKV_ASSIGN_OR_RETURN(v->s, String(what));
      return absl::OkStatus();
    }
    if (type != ValueType::kArray) return Scalar(type, &v->i, &v->f, what);
    if (depth >= kMaxArrayDepth) {
      return Error(absl::StrCat(what, ": arrays nested deeper than ", kMaxArrayDepth));
    }
    QKV_ASSIGN_OR_RETURN(uint32_t et, Get<uint32_t>(what));
    if (!KnownValueType(et)) {
      return Error(absl::StrCat(what, ": unknown array element type ", et));
    }
    v->element_type = static_cast<ValueType>(et);
    QKV_ASSIGN_OR_RETURN(v->size, Get<uint64_t>(what));
    // Every element takes at least one byte (strings and arrays: 8 or more),
    // so a count above the bytes left is a lie; never allocate for it.
    const size_t min_bytes = v->element_type == ValueType::kString  ? 8
                             : v->element_type == ValueType::kArray ? 12
                                                                    : ScalarBytes(v->element_type);
    if (v->size > left() / min_bytes) {
      return Error(absl::StrCat(what, ": array of ", v->size, " ", ValueTypeName(v->element_type),
                                " elements past the end of the file (", left(), " bytes left)"));
    }
    const size_t n = v->size;
    if (v->element_type == ValueType::kString) {
      for (size_t k = 0; k < n; ++k) {
        QKV_ASSIGN_OR_RETURN(std::string s, String(what));
        v->strings.push_back(std::move(s));
      }
    } else if (v->element_type == ValueType::kArray) {
      for (size_t k = 0; k < n; ++k) {
        Value element;
        QKV_RETURN_IF_ERROR(ReadValue(ValueType::kArray, &element, depth + 1, what));
        v->arrays.push_back(std::move(element));
      }
    } else if (IsFloatType(v->element_type)) {
      // The count was checked against the bytes left: reserving is safe.
      v->floats.reserve(n);
      int64_t unused;
      for (size_t k = 0; k < n; ++k) {
        double x;
        QKV_RETURN_IF_ERROR(Scalar(v->element_type, &unused, &x, what));
        v->floats.push_back(x);
      }
    } else {
      v->ints.reserve(n);
      double unused;
      for (size_t k = 0; k < n; ++k) {
        int64_t x;
        QKV_RETURN_IF_ERROR(Scalar(v->element_type, &x, &unused, what));
        v->ints.push_back(x);
      }
    }
    return absl::OkStatus();
  }

 private:
  const uint8_t* base_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& origin_;
};

}  // namespace

std::string ValueTypeName(ValueType t) {
  static constexpr const char* kNames[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                           "int32",  "float32", "bool",   "string", "array",
                                           "uint64", "int64",   "float64"};
  const uint32_t i = static_cast<uint32_t>(t);
  return i < 13 ? kNames[i] : absl::StrCat("type ", i);
}

bool Value::is_integer() const { return IsIntegerType(type); }
bool Value::is_float() const { return IsFloatType(type); }

std::optional<GgmlTypeTraits> GgmlTypeInfo(uint32_t type_id) {
  for (const TypeRow& r : kTypes) {
    if (r.id == type_id) return r.traits;
  }
  return std::nullopt;
}

std::string GgmlTypeName(GgmlType t) {
  std::optional<GgmlTypeTraits> info = GgmlTypeInfo(static_cast<uint32_t>(t));
  return info.has_value() ? info->name : absl::StrCat("type ", static_cast<uint32_t>(t));
}

std::string GgufTensor::DimsString() const {
  return absl::StrCat("[", absl::StrJoin(dims, ", "), "]");
}

GgufFile::~GgufFile() {
  if (mapping_ != nullptr) munmap(mapping_, size_);
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  // O_NONBLOCK: opening a FIFO (or a device) named like a model must not
  // block; anything but a regular file is refused below. mmap ignores it.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(
        path, S_ISDIR(st.st_mode) ? ": a directory, not a GGUF file" : ": not a regular file"));
  }
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0) {
    void* p = mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::InvalidArgumentError(absl::StrCat(path, ": mmap failed: ", std::strerror(err)));
    }
    file->mapping_ = p;
    file->base_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  QKV_RETURN_IF_ERROR(file->Parse());
  return file;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromBytes(std::string bytes,
                                                              std::string origin) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = std::move(origin);
  file->owned_ = std::move(bytes);
  file->base_ = reinterpret_cast<const uint8_t*>(file->owned_.data());
  file->size_ = file->owned_.size();
  QKV_RETURN_IF_ERROR(file->Parse());
  return file;
}

absl::Status GgufFile::Parse() {
  Reader r(base_, size_, path_);
  QKV_ASSIGN_OR_RETURN(uint32_t magic, r.Get<uint32_t>("magic"));
  if (magic != kMagic) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": not a GGUF file (magic 0x",
                                                   absl::Hex(magic, absl::kZeroPad8),
                                                   ", expected \"GGUF\")"));
  }
  QKV_ASSIGN_OR_RETURN(version_, r.Get<uint32_t>("version"));
  if (version_ != 2 && version_ != 3) {
    // A big-endian file reads its small version number byte-swapped.
    const bool big_endian = (version_ & 0xFFFFu) == 0 && version_ != 0;
    return absl::InvalidArgumentError(absl::StrCat(path_, ": unsupported GGUF version ", version_,
                                                   big_endian ? " (a big-endian file?)" : "",
                                                   " (supported: 2, 3, little-endian)"));
  }
  QKV_ASSIGN_OR_RETURN(uint64_t n_tensors, r.Get<uint64_t>("tensor count"));
  QKV_ASSIGN_OR_RETURN(uint64_t n_kv, r.Get<uint64_t>("metadata count"));
  // A key/value pair takes >= 13 bytes (key length 8, >= 1 char, type 4)
  // and a tensor info >= 24 (name length 8, n_dims 4, type 4, offset 8).
  if (n_kv > r.left() / 13) {
    return r.Error(
        absl::StrCat("metadata count ", n_kv, " does not fit in the ", r.left(), " bytes left"));
  }
  if (n_tensors > r.left() / 24) {
    return r.Error(
        absl::StrCat("tensor count ", n_tensors, " does not fit in the ", r.left(), " bytes left"));
  }
  for (uint64_t k = 0; k < n_kv; ++k) {
    QKV_ASSIGN_OR_RETURN(std::string key, r.String(absl::StrCat("metadata key ", k)));
    const std::string what = absl::StrCat("metadata '", key, "'");
    QKV_ASSIGN_OR_RETURN(uint32_t type, r.Get<uint32_t>(what));
    if (!KnownValueType(type)) return r.Error(absl::StrCat(what, ": unknown value type ", type));
    Value v;
    QKV_RETURN_IF_ERROR(r.ReadValue(static_cast<ValueType>(type), &v, 0, what));
    if (!metadata_.emplace(key, std::move(v)).second) {
      return r.Error(absl::StrCat("duplicate metadata key '", key, "'"));
    }
  }
  if (const Value* a = Find("general.alignment"); a != nullptr) {
    if (a->type != ValueType::kUint32) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": general.alignment is ", ValueTypeName(a->type), ", not uint32"));
    }
    if (a->i == 0 || (a->i & (a->i - 1)) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": general.alignment ", a->i, " is not a power of two"));
    }
    alignment_ = static_cast<uint64_t>(a->i);
  }
  tensors_.reserve(n_tensors);
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensor t;
    QKV_ASSIGN_OR_RETURN(t.name, r.String(absl::StrCat("tensor info ", k, " name")));
    const std::string what = absl::StrCat("tensor '", t.name, "'");
    QKV_ASSIGN_OR_RETURN(uint32_t n_dims, r.Get<uint32_t>(what));
    if (n_dims > kMaxDims) {
      return r.Error(absl::StrCat(what, ": ", n_dims, " dims (at most ", kMaxDims, ")"));
    }
    t.numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      QKV_ASSIGN_OR_RETURN(int64_t dim, r.Get<int64_t>(what));
      if (dim < 0) return r.Error(absl::StrCat(what, ": dim ", d, " is negative (", dim, ")"));
      if (dim != 0 && t.numel > std::numeric_limits<int64_t>::max() / dim) {
        return r.Error(absl::StrCat(what, ": element count overflows int64"));
      }
      t.numel *= dim;
      t.dims.push_back(dim);
    }
    QKV_ASSIGN_OR_RETURN(uint32_t type, r.Get<uint32_t>(what));
    std::optional<GgmlTypeTraits> traits = GgmlTypeInfo(type);
    if (!traits.has_value()) {
      return r.Error(absl::StrCat(what, ": unknown ggml tensor type ", type));
    }
    t.type = static_cast<GgmlType>(type);
    QKV_ASSIGN_OR_RETURN(t.offset, r.Get<uint64_t>(what));
    if (t.row_length() % traits->block_size != 0) {
      return r.Error(absl::StrCat(what, ": row length ", t.row_length(),
                                  " is not a multiple of the ", traits->name, " block size ",
                                  traits->block_size));
    }
    const uint64_t blocks = static_cast<uint64_t>(t.numel / traits->block_size);
    if (blocks > std::numeric_limits<uint64_t>::max() / traits->block_bytes ||
        blocks * traits->block_bytes > size_) {
      return r.Error(
          absl::StrCat(what, ": ", t.DimsString(), " ", traits->name, " is larger than the file"));
    }
    t.nbytes = static_cast<size_t>(blocks * traits->block_bytes);
    if (t.offset % alignment_ != 0) {
      return r.Error(absl::StrCat(what, ": data offset ", t.offset,
                                  " is not a multiple of the alignment ", alignment_));
    }
    if (!tensor_index_.emplace(t.name, tensors_.size()).second) {
      return r.Error(absl::StrCat("duplicate tensor name '", t.name, "'"));
    }
    tensors_.push_back(std::move(t));
  }
  const uint64_t end_of_infos = r.pos();
  data_offset_ = (end_of_infos + alignment_ - 1) / alignment_ * alignment_;
  if (n_tensors > 0 && data_offset_ > size_) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": truncated file: data section starts at ", data_offset_,
                     " past the end of the file (", size_, " bytes)"));
  }
  const uint64_t data_bytes = size_ - std::min<uint64_t>(data_offset_, size_);
  std::vector<const GgufTensor*> by_offset;
  for (GgufTensor& t : tensors_) {
    if (t.offset > data_bytes || t.nbytes > data_bytes - t.offset) {
      return absl::InvalidArgumentError(absl::StrCat(
          path_, ": tensor '", t.name, "': data [", t.offset, ", +", t.nbytes,
          ") past the end of the data section (", data_bytes, " bytes; truncated file?)"));
    }
    t.data = base_ + data_offset_ + t.offset;
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const GgufTensor& a = *by_offset[k - 1];
    const GgufTensor& b = *by_offset[k];
    if (a.nbytes > 0 && b.nbytes > 0 && a.offset + a.nbytes > b.offset) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ": tensors '", a.name, "' and '", b.name, "' overlap"));
    }
  }
  return absl::OkStatus();
}

const Value* GgufFile::Find(std::string_view key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

namespace {

absl::Status KeyNotFound(const std::string& path, std::string_view key) {
  return absl::NotFoundError(
      absl::StrCat(path, ": metadata key '", std::string(key), "' not found"));
}

absl::Status WrongType(const std::string& path, std::string_view key, const Value& v,
                       std::string_view wanted) {
  std::string got = ValueTypeName(v.type);
  if (v.type == ValueType::kArray) absl::StrAppend(&got, " of ", ValueTypeName(v.element_type));
  return absl::InvalidArgumentError(absl::StrCat(path, ": metadata '", std::string(key), "' is ",
                                                 got, ", expected ", std::string(wanted)));
}

}  // namespace

absl::StatusOr<int64_t> GgufFile::GetInt(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return KeyNotFound(path_, key);
  if (!v->is_integer()) return WrongType(path_, key, *v, "an integer");
  if (v->type == ValueType::kUint64 && v->i < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": metadata '", std::string(key), "' is out of range"));
  }
  return v->i;
}

absl::StatusOr<double> GgufFile::GetFloat(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return KeyNotFound(path_, key);
  if (v->is_float()) return v->f;
  if (v->is_integer() && v->type != ValueType::kBool) return static_cast<double>(v->i);
  return WrongType(path_, key, *v, "a number");
}

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return KeyNotFound(path_, key);
  if (v->type != ValueType::kString) return WrongType(path_, key, *v, "a string");
  return v->s;
}

absl::StatusOr<const std::vector<std::string>*> GgufFile::GetStringArray(
    std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return KeyNotFound(path_, key);
  if (v->type != ValueType::kArray || v->element_type != ValueType::kString) {
    return WrongType(path_, key, *v, "an array of string");
  }
  return &v->strings;
}

absl::StatusOr<const std::vector<double>*> GgufFile::GetFloatArray(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return KeyNotFound(path_, key);
  if (v->type != ValueType::kArray || !IsFloatType(v->element_type)) {
    return WrongType(path_, key, *v, "an array of float");
  }
  return &v->floats;
}

absl::StatusOr<const std::vector<int64_t>*> GgufFile::GetIntArray(std::string_view key) const {
  const Value* v = Find(key);
  if (v == nullptr) return KeyNotFound(path_, key);
  if (v->type != ValueType::kArray || !IsIntegerType(v->element_type)) {
    return WrongType(path_, key, *v, "an array of integer");
  }
  return &v->ints;
}

const GgufTensor* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace qkvshare::agents::gguf

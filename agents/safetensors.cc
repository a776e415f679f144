#include "agents/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agents/file_util.h"
#include "base/status_macros.h"
#include "nlohmann/json.hpp"

namespace qkvshare::agents {
namespace {

using Json = nlohmann::json;

// The safetensors spec caps the header at 100 MB.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Element size of each safetensors dtype; 0 for unknown names.
size_t ElementSize(std::string_view dtype) {
  static const std::pair<std::string_view, size_t> kSizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
  for (const auto& [name, size] : kSizes) {
    if (name == dtype) return size;
  }
  return 0;
}

std::optional<DType> ComputeDType(std::string_view dtype) {
  if (dtype == "F32") return DType::kF32;
  if (dtype == "F16") return DType::kF16;
  if (dtype == "BF16") return DType::kBF16;
  return std::nullopt;
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::ShapeString() const {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

SafetensorsFile::~SafetensorsFile() {
  if (base_ != nullptr) ::munmap(base_, size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::InternalError(absl::StrCat(path, ": cannot open: ", std::strerror(err)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": fstat failed"));
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": truncated safetensors file (", size, " bytes, no header length)"));
  }
  // MAP_POPULATE: fault the pages in now, not during the first forward.
  void* base = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) {
    return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(errno)));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile(path, base, size));
  QKV_RETURN_IF_ERROR(file->ParseHeader());
  return file;
}

absl::Status SafetensorsFile::ParseHeader() {
  const auto* bytes = static_cast<const unsigned char*>(base_);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  auto invalid = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", what));
  };
  if (header_len > kMaxHeaderBytes || header_len > size_ - 8) {
    return invalid(absl::StrCat("truncated safetensors file: header length ", header_len,
                                " exceeds the ", size_ - 8, " bytes after the length field"));
  }
  const char* header = reinterpret_cast<const char*>(bytes + 8);
  Json j = Json::parse(header, header + header_len, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return invalid("header is not a JSON object");
  const char* data = header + header_len;
  const size_t data_bytes = size_ - 8 - header_len;

  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const Json& e = it.value();
    auto bad = [&](absl::string_view what) {
      return invalid(absl::StrCat("tensor '", it.key(), "': ", what));
    };
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") ||
        !e.contains("data_offsets")) {
      return bad("entry needs dtype, shape and data_offsets");
    }
    TensorInfo t;
    t.name = it.key();
    t.file = path_;
    if (!e.at("dtype").is_string()) return bad("dtype is not a string");
    t.dtype_name = e.at("dtype").get<std::string>();
    size_t elem = ElementSize(t.dtype_name);
    if (elem == 0) return bad(absl::StrCat("unknown dtype '", t.dtype_name, "'"));
    t.dtype = ComputeDType(t.dtype_name);
    const Json& shape = e.at("shape");
    if (!shape.is_array()) return bad("shape is not an array");
    uint64_t numel = 1;
    for (const Json& d : shape) {
      if (!d.is_number_unsigned()) return bad(absl::StrCat("bad shape ", shape.dump()));
      uint64_t v = d.get<uint64_t>();
      if (v != 0 && numel > (uint64_t{1} << 62) / v) return bad("shape overflows");
      numel *= v;
      t.shape.push_back(static_cast<int64_t>(v));
    }
    const Json& off = e.at("data_offsets");
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned()) {
      return bad(absl::StrCat("bad data_offsets ", off.dump()));
    }
    uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_bytes) {
      return bad(absl::StrCat("data_offsets [", begin, ", ", end, ") outside the ", data_bytes,
                              "-byte data block (truncated file?)"));
    }
    if (end - begin != numel * elem) {
      return bad(absl::StrCat("data_offsets span ", end - begin, " bytes but shape ",
                              t.ShapeString(), " of ", t.dtype_name, " needs ", numel * elem));
    }
    t.data = data + begin;
    t.nbytes = end - begin;
    tensors_.push_back(std::move(t));
  }
  // Overlap check: sort by start, each must begin at or after the previous end.
  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->data < b->data || (a->data == b->data && a->nbytes < b->nbytes);
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo* prev = by_offset[i - 1];
    const TensorInfo* cur = by_offset[i];
    if (cur->nbytes > 0 &&
        static_cast<const char*>(cur->data) < static_cast<const char*>(prev->data) + prev->nbytes) {
      return invalid(absl::StrCat("tensors '", prev->name, "' and '", cur->name, "' overlap"));
    }
  }
  std::sort(tensors_.begin(), tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
  return absl::OkStatus();
}

absl::Status WeightFiles::Add(std::unique_ptr<SafetensorsFile> file) {
  for (const TensorInfo& t : file->tensors()) {
    auto [it, inserted] = by_name_.emplace(t.name, &t);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat(dir_, ": tensor '", t.name, "' is in both ",
                                                     it->second->file, " and ", t.file));
    }
  }
  files_.push_back(std::move(file));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<WeightFiles>> WeightFiles::Open(const std::string& dir) {
  std::unique_ptr<WeightFiles> w(new WeightFiles(dir));
  const std::string single = JoinPath(dir, "model.safetensors");
  const std::string index_path = JoinPath(dir, "model.safetensors.index.json");
  if (PathExists(single) || !PathExists(index_path)) {
    QKV_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single));
    QKV_RETURN_IF_ERROR(w->Add(std::move(file)));
    return w;
  }
  QKV_ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path));
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") ||
      !j.at("weight_map").is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": key 'weight_map': missing or not an object"));
  }
  std::set<std::string> shards;
  for (auto it = j.at("weight_map").begin(); it != j.at("weight_map").end(); ++it) {
    if (!it.value().is_string() || it.value().get<std::string>().find('/') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": tensor '", it.key(), "': shard is not a file name"));
    }
    shards.insert(it.value().get<std::string>());
  }
  for (const std::string& shard : shards) {
    QKV_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(JoinPath(dir, shard)));
    QKV_RETURN_IF_ERROR(w->Add(std::move(file)));
  }
  for (auto it = j.at("weight_map").begin(); it != j.at("weight_map").end(); ++it) {
    const TensorInfo* t = w->Find(it.key());
    const std::string shard_path = JoinPath(dir, it.value().get<std::string>());
    if (t == nullptr || t->file != shard_path) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": tensor '", it.key(), "' is not in ", shard_path));
    }
  }
  return w;
}

absl::StatusOr<std::unique_ptr<WeightFiles>> WeightFiles::FromTensors(
    std::string dir, std::vector<TensorInfo> tensors,
    std::map<std::string, std::unique_ptr<weights::QuantizedMatrix>, std::less<>> quantized,
    std::shared_ptr<const void> storage) {
  std::unique_ptr<WeightFiles> w(new WeightFiles(std::move(dir)));
  w->own_tensors_ = std::move(tensors);
  w->quantized_ = std::move(quantized);
  w->storage_ = std::move(storage);
  for (const TensorInfo& t : w->own_tensors_) {
    if (!w->by_name_.emplace(t.name, &t).second || w->quantized_.count(t.name) > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(w->dir_, ": tensor '", t.name, "' is given twice"));
    }
  }
  return w;
}

const weights::QuantizedMatrix* WeightFiles::FindQuantized(std::string_view name) const {
  auto it = quantized_.find(name);
  return it == quantized_.end() ? nullptr : it->second.get();
}

const TensorInfo* WeightFiles::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

absl::StatusOr<const TensorInfo*> WeightFiles::Get(std::string_view name_sv,
                                                   absl::Span<const int64_t> shape) const {
  const TensorInfo* t = Find(name_sv);
  const absl::string_view name(name_sv.data(), name_sv.size());
  if (t == nullptr) {
    return absl::NotFoundError(absl::StrCat(dir_, ": tensor '", name, "' not found"));
  }
  if (!std::equal(shape.begin(), shape.end(), t->shape.begin(), t->shape.end())) {
    return absl::InvalidArgumentError(absl::StrCat(t->file, ": tensor '", name, "' has shape ",
                                                   t->ShapeString(), ", expected [",
                                                   absl::StrJoin(shape, ", "), "]"));
  }
  if (!t->dtype.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(t->file, ": tensor '", name, "' has dtype ",
                                                   t->dtype_name, " (supported: F32, F16, BF16)"));
  }
  return t;
}

}  // namespace qkvshare::agents

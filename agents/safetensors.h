// File: agents/safetensors.h
// -----------------------------------------------------------------------------
// Read-only, memory-mapped safetensors checkpoints (format: huggingface/
// safetensors README): an 8-byte little-endian header length N, N bytes of
// JSON {"name": {"dtype", "shape", "data_offsets": [begin, end)}, ...,
// "__metadata__": {...}}, then the data block; offsets are relative to it.
//
// SafetensorsFile maps one file and validates its header completely before
// anything is used: header length within the file, every dtype a known
// safetensors dtype, offsets inside the data block, end - begin == numel *
// element size, no two tensors overlapping. WeightFiles opens a model
// directory: `model.safetensors`, or the shards named by
// `model.safetensors.index.json` ("weight_map": tensor name -> file).
//
// The tensor data pointers point into the read-only mappings; they stay
// valid while the SafetensorsFile / WeightFiles object lives. The runtime
// wraps them with torch::from_blob when the stored dtype is the compute
// dtype, so weights are never copied (and never written: the pages are
// mapped PROT_READ; a write would fault).
//
// Lifecycle: Open() -> read -> destroy (unmaps). Thread safety: immutable
// after Open(); const methods may be called concurrently.
//
// Example:
//   QKV_ASSIGN_OR_RETURN(auto weights, WeightFiles::Open(dir));
//   QKV_ASSIGN_OR_RETURN(const TensorInfo* w,
//                        weights->Get("model.norm.weight", {hidden_size}));
//   // w->data: hidden_size elements of w->dtype
#ifndef QKVSHARE_AGENTS_SAFETENSORS_H_
#define QKVSHARE_AGENTS_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "agents/weights/quantized_matrix.h"
#include "base/dtype.h"

namespace qkvshare::agents {

// One tensor of a safetensors file.
struct TensorInfo {
  std::string name;
  // The safetensors dtype string ("F32", "BF16", "I64", ...).
  std::string dtype_name;
  // Set for the dtypes the runtime computes with (F32, F16, BF16).
  std::optional<DType> dtype;
  std::vector<int64_t> shape;
  // Start of the data in the mapping (read-only), and its size in bytes.
  const void* data = nullptr;
  size_t nbytes = 0;
  // The file holding the tensor (as opened).
  std::string file;

  int64_t numel() const;
  // "[768, 2048]".
  std::string ShapeString() const;
};

class SafetensorsFile {
 public:
  // Maps and validates `path`. Errors: NotFound when missing; InvalidArgument
  // naming the file (and tensor) for a truncated file, malformed header JSON,
  // an unknown dtype, bad shapes or offsets, overlapping tensors.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  // Tensors sorted by name.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // Size of the whole file in bytes.
  size_t file_bytes() const { return size_; }

 private:
  SafetensorsFile(std::string path, void* base, size_t size)
      : path_(std::move(path)), base_(base), size_(size) {}
  absl::Status ParseHeader();

  std::string path_;
  void* base_;
  size_t size_;
  std::vector<TensorInfo> tensors_;
};

class WeightFiles {
 public:
  // Opens `dir`/model.safetensors, or, when it is absent,
  // `dir`/model.safetensors.index.json and every shard it names. Errors:
  // NotFound when neither exists; InvalidArgument for a malformed index, a
  // tensor listed in the index but missing from its shard, or a tensor name
  // present in two files; plus SafetensorsFile::Open's errors.
  static absl::StatusOr<std::unique_ptr<WeightFiles>> Open(const std::string& dir);

  // A model's tensors taken from another container (a GGUF file, see
  // agents/gguf/gguf_model.h), under the HF names: dense `tensors` whose data
  // stays valid while `storage` lives (this object keeps it), and matrices
  // already in a block format (`quantized`, by name; the runtime uses them
  // instead of quantizing when their format is the one it runs). `dir` names
  // the source in errors. Errors: InvalidArgument for a name given twice.
  static absl::StatusOr<std::unique_ptr<WeightFiles>> FromTensors(
      std::string dir, std::vector<TensorInfo> tensors,
      std::map<std::string, std::unique_ptr<weights::QuantizedMatrix>, std::less<>> quantized,
      std::shared_ptr<const void> storage);

  // The tensor named `name`, or nullptr.
  const TensorInfo* Find(std::string_view name) const;
  // The ready block matrix named `name` (FromTensors), or nullptr.
  const weights::QuantizedMatrix* FindQuantized(std::string_view name) const;
  // Every ready block matrix, by name (empty for safetensors checkpoints).
  const std::map<std::string, std::unique_ptr<weights::QuantizedMatrix>, std::less<>>& quantized()
      const {
    return quantized_;
  }

  // The tensor named `name`, checked to have `shape` and a supported dtype.
  // Errors: NotFound ("<dir>: tensor '<name>' not found"); InvalidArgument
  // naming file and tensor for a wrong shape or an unsupported dtype.
  absl::StatusOr<const TensorInfo*> Get(std::string_view name,
                                        absl::Span<const int64_t> shape) const;

  // Every tensor of every file, by name.
  const std::map<std::string, const TensorInfo*, std::less<>>& tensors() const { return by_name_; }
  // The opened files in name order.
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  const std::string& dir() const { return dir_; }

 private:
  explicit WeightFiles(std::string dir) : dir_(std::move(dir)) {}
  absl::Status Add(std::unique_ptr<SafetensorsFile> file);

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*, std::less<>> by_name_;
  // FromTensors: the dense tensors, the block matrices, and what keeps the
  // dense tensors' data alive.
  std::vector<TensorInfo> own_tensors_;
  std::map<std::string, std::unique_ptr<weights::QuantizedMatrix>, std::less<>> quantized_;
  std::shared_ptr<const void> storage_;
};

}  // namespace qkvshare::agents

#endif  // QKVSHARE_AGENTS_SAFETENSORS_H_

// File: agents/tokenizer/json_util.h
// -----------------------------------------------------------------------------
// Typed, exception-free accessors for tokenizer.json (internal). Every error is
// InvalidArgument and names the source and the key path, e.g.
//   "models/x/tokenizer.json: key 'normalizer.normalizers[1].type': ..."
// nlohmann::json stays inside agents/tokenizer.
//
// Thread safety: pure functions.
#ifndef QKVSHARE_AGENTS_TOKENIZER_JSON_UTIL_H_
#define QKVSHARE_AGENTS_TOKENIZER_JSON_UTIL_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace qkvshare::agents::tokenizer_internal {

using Json = nlohmann::json;

// Where a value sits: the source (file path or caller-given origin) and the
// dotted key path inside it ("model.merges[3]").
struct JsonPath {
  std::string_view origin;
  std::string path;

  // Child key / array element paths.
  JsonPath Key(std::string_view key) const;
  JsonPath Index(size_t index) const;
  // InvalidArgument "<origin>: key '<path>': <message>".
  absl::Status Error(absl::string_view message) const;
};

// The member `key` of `object`, or nullptr when absent or JSON null.
const Json* FindMember(const Json& object, std::string_view key);

// Required members: error when absent, null or of another type.
absl::StatusOr<std::string> GetString(const Json& object, std::string_view key,
                                      const JsonPath& where);
absl::StatusOr<const Json*> GetObject(const Json& object, std::string_view key,
                                      const JsonPath& where);
absl::StatusOr<const Json*> GetArray(const Json& object, std::string_view key,
                                     const JsonPath& where);

// Optional members: `fallback` when absent or null; error for another type.
absl::StatusOr<bool> GetBoolOr(const Json& object, std::string_view key, bool fallback,
                               const JsonPath& where);
absl::StatusOr<int64_t> GetIntOr(const Json& object, std::string_view key, int64_t fallback,
                                 const JsonPath& where);
absl::StatusOr<std::string> GetStringOr(const Json& object, std::string_view key,
                                        std::string_view fallback, const JsonPath& where);

// The "type" member of a component object (error if `value` is not an object
// or has no string "type").
absl::StatusOr<std::string> GetType(const Json& value, const JsonPath& where);

// A one-character string member (Metaspace "replacement", Strip "content"),
// returned as its UTF-8.
absl::StatusOr<std::string> GetChar(const Json& object, std::string_view key,
                                    std::string_view fallback, const JsonPath& where);

}  // namespace qkvshare::agents::tokenizer_internal

#endif  // QKVSHARE_AGENTS_TOKENIZER_JSON_UTIL_H_

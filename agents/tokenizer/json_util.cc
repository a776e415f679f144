#include "agents/tokenizer/json_util.h"

#include "absl/strings/str_cat.h"
#include "agents/tokenizer/string_view_compat.h"
#include "agents/tokenizer/utf8.h"

namespace qkvshare::agents::tokenizer_internal {

JsonPath JsonPath::Key(std::string_view key) const {
  return JsonPath{origin, path.empty() ? std::string(key) : absl::StrCat(path, ".", AsAbsl(key))};
}

JsonPath JsonPath::Index(size_t index) const {
  return JsonPath{origin, absl::StrCat(path, "[", index, "]")};
}

absl::Status JsonPath::Error(absl::string_view message) const {
  return absl::InvalidArgumentError(absl::StrCat(AsAbsl(origin), ": key '", path, "': ", message));
}

const Json* FindMember(const Json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::StatusOr<std::string> GetString(const Json& object, std::string_view key,
                                      const JsonPath& where) {
  const Json* v = FindMember(object, key);
  if (v == nullptr) return where.Key(key).Error("missing (expected a string)");
  if (!v->is_string()) return where.Key(key).Error("expected a string");
  return v->get<std::string>();
}

absl::StatusOr<const Json*> GetObject(const Json& object, std::string_view key,
                                      const JsonPath& where) {
  const Json* v = FindMember(object, key);
  if (v == nullptr) return where.Key(key).Error("missing (expected an object)");
  if (!v->is_object()) return where.Key(key).Error("expected an object");
  return v;
}

absl::StatusOr<const Json*> GetArray(const Json& object, std::string_view key,
                                     const JsonPath& where) {
  const Json* v = FindMember(object, key);
  if (v == nullptr) return where.Key(key).Error("missing (expected an array)");
  if (!v->is_array()) return where.Key(key).Error("expected an array");
  return v;
}

absl::StatusOr<bool> GetBoolOr(const Json& object, std::string_view key, bool fallback,
                               const JsonPath& where) {
  const Json* v = FindMember(object, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) return where.Key(key).Error("expected true or false");
  return v->get<bool>();
}

absl::StatusOr<int64_t> GetIntOr(const Json& object, std::string_view key, int64_t fallback,
                                 const JsonPath& where) {
  const Json* v = FindMember(object, key);
  if (v == nullptr) return fallback;
  if (!v->is_number_integer()) return where.Key(key).Error("expected an integer");
  return v->get<int64_t>();
}

absl::StatusOr<std::string> GetStringOr(const Json& object, std::string_view key,
                                        std::string_view fallback, const JsonPath& where) {
  const Json* v = FindMember(object, key);
  if (v == nullptr) return std::string(fallback);
  if (!v->is_string()) return where.Key(key).Error("expected a string");
  return v->get<std::string>();
}

absl::StatusOr<std::string> GetType(const Json& value, const JsonPath& where) {
  if (!value.is_object()) return where.Error("expected an object with a \"type\"");
  return GetString(value, "type", where);
}

absl::StatusOr<std::string> GetChar(const Json& object, std::string_view key,
                                    std::string_view fallback, const JsonPath& where) {
  absl::StatusOr<std::string> s = GetStringOr(object, key, fallback, where);
  if (!s.ok()) return s.status();
  // JSON strings are valid UTF-8 (nlohmann checks while parsing).
  size_t length = 0;
  if (s->empty() || (DecodeUtf8At(*s, 0, &length), length != s->size())) {
    return where.Key(key).Error(absl::StrCat("expected exactly one character, got \"", *s, "\""));
  }
  return s;
}

}  // namespace qkvshare::agents::tokenizer_internal

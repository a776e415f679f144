#include "daemon/config/yaml_reader.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agents/tokenizer/utf8.h"
#include "base/status_macros.h"

namespace qkvshare::daemon::config_internal {

namespace {

// "file:line:col: path" ("file" alone for a node without a position; no
// ": path" when the path is empty).
std::string Location(const std::string& file, const YAML::Node& node, const std::string& path) {
  YAML::Mark m = node.IsDefined() ? node.Mark() : YAML::Mark::null_mark();
  std::string where = file;
  if (m.line >= 0) absl::StrAppend(&where, ":", m.line + 1, ":", m.column + 1);
  if (!path.empty()) absl::StrAppend(&where, ": ", path);
  return where;
}

}  // namespace

absl::Status CheckUtf8(const std::string& file, const YAML::Node& node, const std::string& path,
                       const std::string& text) {
  const size_t bad = agents::tokenizer_internal::FindInvalidUtf8(text);
  if (bad == std::string::npos) return absl::OkStatus();
  return YamlError(file, node, path,
                   absl::StrCat("text is not valid UTF-8 (ill-formed or truncated sequence at "
                                "byte ",
                                bad, " of the value)"));
}

absl::Status YamlError(const std::string& file, const YAML::Node& node, const std::string& path,
                       const std::string& message) {
  return absl::InvalidArgumentError(absl::StrCat(Location(file, node, path), ": ", message));
}

absl::StatusOr<YAML::Node> ParseYaml(const std::string& text, const std::string& file) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ":", e.mark.line + 1, ":", e.mark.column + 1, ": YAML syntax error: ", e.msg));
  }
}

YamlMap::YamlMap(const YAML::Node& node, std::string file, std::string path)
    : node_(node), file_(std::move(file)), path_(std::move(path)) {}

absl::Status YamlMap::Init() const {
  if (!node_.IsDefined() || node_.IsNull()) return absl::OkStatus();
  if (!node_.IsMap()) return YamlError(file_, node_, path_, "expected a mapping of keys");
  // yaml-cpp keeps both entries of a repeated key and lookups see the first:
  // a silent override of what the author wrote last. Refuse it.
  std::map<std::string, YAML::Mark> seen;
  for (const auto& kv : node_) {
    const std::string key = kv.first.Scalar();
    const auto [it, fresh] = seen.emplace(key, kv.first.Mark());
    if (!fresh) {
      return YamlError(file_, kv.first, KeyPath(key),
                       absl::StrCat("duplicate key (first at line ", it->second.line + 1, ")"));
    }
  }
  return absl::OkStatus();
}

std::string YamlMap::KeyPath(const std::string& key) const {
  return path_.empty() ? key : absl::StrCat(path_, ".", key);
}

bool YamlMap::Has(const std::string& key) const {
  return node_.IsMap() && node_[key].IsDefined() && !node_[key].IsNull();
}

YAML::Node YamlMap::NodeOf(const std::string& key) const {
  // Copy-construct, never assign: YAML::Node::operator= writes through to
  // the node it aliases (here node_ itself).
  return !key.empty() && node_.IsMap() && node_[key].IsDefined() ? node_[key] : node_;
}

absl::Status YamlMap::Error(const std::string& key, const std::string& message) const {
  return YamlError(file_, NodeOf(key), key.empty() ? path_ : KeyPath(key), message);
}

std::string YamlMap::Where(const std::string& key) const {
  return Location(file_, NodeOf(key), key.empty() ? path_ : KeyPath(key));
}

absl::Status YamlMap::Lookup(const std::string& key, bool required, YAML::Node* value,
                             bool* found) {
  known_.insert(key);
  *found = Has(key);
  if (!*found) {
    if (required) return YamlError(file_, node_, KeyPath(key), "required key is missing");
    return absl::OkStatus();
  }
  *value = node_[key];
  return absl::OkStatus();
}

absl::Status YamlMap::GetString(const std::string& key, std::string* out, bool required) {
  YAML::Node v;
  bool found = false;
  if (absl::Status s = Lookup(key, required, &v, &found); !s.ok() || !found) return s;
  if (!v.IsScalar()) return YamlError(file_, v, KeyPath(key), "expected a string");
  QKV_RETURN_IF_ERROR(CheckUtf8(file_, v, KeyPath(key), v.Scalar()));
  *out = v.Scalar();
  return absl::OkStatus();
}

absl::Status YamlMap::GetInt(const std::string& key, int64_t* out, int64_t min, int64_t max,
                             bool required) {
  YAML::Node v;
  bool found = false;
  if (absl::Status s = Lookup(key, required, &v, &found); !s.ok() || !found) return s;
  int64_t x = 0;
  std::string text = v.IsScalar() ? v.Scalar() : "";
  // Accept "_" digit separators (268_435_456), as YAML 1.1 does.
  text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
  if (!v.IsScalar() || !absl::SimpleAtoi(text, &x)) {
    return YamlError(
        file_, v, KeyPath(key),
        absl::StrCat("expected an integer, got '", v.IsScalar() ? v.Scalar() : "?", "'"));
  }
  if (x < min || x > max) {
    return YamlError(file_, v, KeyPath(key),
                     absl::StrCat(x, " is out of range [", min, ", ", max, "]"));
  }
  *out = x;
  return absl::OkStatus();
}

absl::Status YamlMap::GetDouble(const std::string& key, double* out, double min, double max,
                                bool required) {
  YAML::Node v;
  bool found = false;
  if (absl::Status s = Lookup(key, required, &v, &found); !s.ok() || !found) return s;
  double x = 0;
  if (!v.IsScalar() || !absl::SimpleAtod(v.Scalar(), &x) || !std::isfinite(x)) {
    return YamlError(
        file_, v, KeyPath(key),
        absl::StrCat("expected a number, got '", v.IsScalar() ? v.Scalar() : "?", "'"));
  }
  if (x < min || x > max) {
    return YamlError(file_, v, KeyPath(key),
                     absl::StrCat(x, " is out of range [", min, ", ", max, "]"));
  }
  *out = x;
  return absl::OkStatus();
}

absl::Status YamlMap::GetBool(const std::string& key, bool* out) {
  YAML::Node v;
  bool found = false;
  if (absl::Status s = Lookup(key, false, &v, &found); !s.ok() || !found) return s;
  const std::string t = v.IsScalar() ? v.Scalar() : "";
  if (t == "true" || t == "yes" || t == "on") {
    *out = true;
  } else if (t == "false" || t == "no" || t == "off") {
    *out = false;
  } else {
    return YamlError(file_, v, KeyPath(key), absl::StrCat("expected true or false, got '", t, "'"));
  }
  return absl::OkStatus();
}

absl::Status YamlMap::GetStringList(const std::string& key, std::vector<std::string>* out) {
  YAML::Node v;
  bool found = false;
  if (absl::Status s = Lookup(key, false, &v, &found); !s.ok() || !found) return s;
  std::vector<std::string> items;
  if (v.IsScalar()) {
    QKV_RETURN_IF_ERROR(CheckUtf8(file_, v, KeyPath(key), v.Scalar()));
    items.push_back(v.Scalar());
  } else if (v.IsSequence()) {
    for (const YAML::Node& item : v) {
      const std::string item_path = absl::StrCat(KeyPath(key), "[", items.size(), "]");
      if (!item.IsScalar()) return YamlError(file_, item, item_path, "expected strings");
      QKV_RETURN_IF_ERROR(CheckUtf8(file_, item, item_path, item.Scalar()));
      items.push_back(item.Scalar());
    }
  } else {
    return YamlError(file_, v, KeyPath(key), "expected a list of strings");
  }
  *out = std::move(items);
  return absl::OkStatus();
}

absl::Status YamlMap::GetEnum(const std::string& key, const std::vector<std::string>& choices,
                              std::string* out, bool required) {
  std::string value;
  bool had = Has(key);
  if (absl::Status s = GetString(key, &value, required); !s.ok() || !had) return s;
  for (const std::string& c : choices) {
    if (c == value) {
      *out = value;
      return absl::OkStatus();
    }
  }
  return Error(key, absl::StrCat("'", value, "' is not one of: ", absl::StrJoin(choices, ", ")));
}

YamlMap YamlMap::Child(const std::string& key) {
  known_.insert(key);
  YAML::Node child = node_.IsMap() ? node_[key] : YAML::Node();
  return YamlMap(child, file_, KeyPath(key));
}

YAML::Node YamlMap::Raw(const std::string& key) {
  known_.insert(key);
  return Has(key) ? YAML::Node(node_[key]) : YAML::Node();
}

std::vector<std::string> YamlMap::Keys() const {
  std::vector<std::string> keys;
  if (!node_.IsMap()) return keys;
  for (const auto& kv : node_) keys.push_back(kv.first.Scalar());
  return keys;
}

absl::Status YamlMap::Finish() const {
  if (!node_.IsMap()) return absl::OkStatus();
  for (const auto& kv : node_) {
    const std::string key = kv.first.Scalar();
    if (known_.count(key) == 0) {
      std::vector<std::string> allowed(known_.begin(), known_.end());
      return YamlError(
          file_, kv.first, KeyPath(key),
          absl::StrCat("unknown key (allowed here: ", absl::StrJoin(allowed, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace qkvshare::daemon::config_internal

// File: daemon/config/yaml_reader.h
// -----------------------------------------------------------------------------
// Strict, position-aware reading of YAML mappings (internal to daemon/config).
// Every error names the file, the line and column (1-based) and the dotted key
// path, e.g.
//   configs/daemon.yaml:12:5: agents.writer.generation.top_k: expected an
//   integer, got 'many'
// Unknown keys are errors, never silently ignored.
//
// Usage: wrap a mapping node, read each known key with the typed getters
// (missing optional keys leave the output untouched), then call Finish(),
// which reports the first unknown key. Not thread-safe; one reader per node.
#ifndef QKVSHARE_DAEMON_CONFIG_YAML_READER_H_
#define QKVSHARE_DAEMON_CONFIG_YAML_READER_H_

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace qkvshare::daemon::config_internal {

// "file:line:col: path: message" as InvalidArgument.
absl::Status YamlError(const std::string& file, const YAML::Node& node, const std::string& path,
                       const std::string& message);

// InvalidArgument "file:line:col: path: text is not valid UTF-8 (...)" when
// `text` (the scalar of `node`) is not valid UTF-8: every string the daemon
// reads from YAML ends up in a proto3 string or a tokenizer, both of which
// need UTF-8.
absl::Status CheckUtf8(const std::string& file, const YAML::Node& node, const std::string& path,
                       const std::string& text);

// Parses YAML text; syntax errors become InvalidArgument with file:line:col.
absl::StatusOr<YAML::Node> ParseYaml(const std::string& text, const std::string& file);

class YamlMap {
 public:
  // `node` must be a mapping (or null/absent, treated as empty) else Init()
  // fails. `path` is the dotted prefix of its keys ("" at the top level).
  YamlMap(const YAML::Node& node, std::string file, std::string path);

  // InvalidArgument when the node is neither a mapping nor null.
  absl::Status Init() const;

  bool Has(const std::string& key) const;
  // String getters refuse text that is not valid UTF-8 (CheckUtf8).
  absl::Status GetString(const std::string& key, std::string* out, bool required = false);
  absl::Status GetInt(const std::string& key, int64_t* out, int64_t min, int64_t max,
                      bool required = false);
  absl::Status GetDouble(const std::string& key, double* out, double min, double max,
                         bool required = false);
  absl::Status GetBool(const std::string& key, bool* out);
  absl::Status GetStringList(const std::string& key, std::vector<std::string>* out);
  // One of `choices`.
  absl::Status GetEnum(const std::string& key, const std::vector<std::string>& choices,
                       std::string* out, bool required = false);
  // A nested mapping (marks the key as known). Missing -> an empty map.
  YamlMap Child(const std::string& key);
  // The raw node of `key` (marks it as known); undefined when absent.
  YAML::Node Raw(const std::string& key);
  // Keys of a mapping-of-mappings ("models", "agents"), in file order.
  std::vector<std::string> Keys() const;

  // Error at this map's node or one of its keys.
  absl::Status Error(const std::string& key, const std::string& message) const;
  // "file:line:col: key.path" of `key`'s value (or of this map), for errors
  // found after parsing (e.g. a model directory that does not exist).
  std::string Where(const std::string& key) const;
  // InvalidArgument naming the first key that no getter asked for.
  absl::Status Finish() const;

  const std::string& file() const { return file_; }
  std::string KeyPath(const std::string& key) const;

 private:
  absl::Status Lookup(const std::string& key, bool required, YAML::Node* value, bool* found);
  // `key`'s value node, or this map's node when `key` is empty or absent.
  YAML::Node NodeOf(const std::string& key) const;

  YAML::Node node_;
  std::string file_;
  std::string path_;
  std::set<std::string> known_;
};

}  // namespace qkvshare::daemon::config_internal

#endif  // QKVSHARE_DAEMON_CONFIG_YAML_READER_H_

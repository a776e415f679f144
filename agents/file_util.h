// File: agents/file_util.h
// -----------------------------------------------------------------------------
// Small file helpers for the runtime's loaders (config.json, tokenizer.json,
// golden files): whole-file reads that report errors as absl::Status.
// Thread safety: the functions are reentrant.
#ifndef QKVSHARE_AGENTS_FILE_UTIL_H_
#define QKVSHARE_AGENTS_FILE_UTIL_H_

#include <string>

#include "absl/status/statusor.h"

namespace qkvshare::agents {

// Contents of `path`. Errors: NotFound when it does not exist; Internal for
// other read failures (the message names the path and errno text).
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// True when `path` names an existing file or directory.
bool PathExists(const std::string& path);

// True when `path` names an existing regular file (after symlinks), e.g. a
// model given as one .gguf file rather than a directory.
bool IsRegularFile(const std::string& path);

// `dir` + "/" + `name` (no separator doubled).
std::string JoinPath(const std::string& dir, const std::string& name);

}  // namespace qkvshare::agents

#endif  // QKVSHARE_AGENTS_FILE_UTIL_H_

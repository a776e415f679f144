// File: base/status_macros.h
// -----------------------------------------------------------------------------
// Early-return helpers for absl::Status / absl::StatusOr. Debian 12's Abseil
// (20220623) has no status_macros.h, so the project defines its own.
//
// Example:
//
//   absl::StatusOr<Config> Load(const std::string& path) {
//     QKV_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
//     QKV_RETURN_IF_ERROR(Validate(text));
//     return Parse(text);
//   }
#ifndef QKVSHARE_BASE_STATUS_MACROS_H_
#define QKVSHARE_BASE_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Evaluates `expr` (an absl::Status) and returns it from the enclosing
// function when it is not OK.
#define QKV_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::absl::Status qkv_status_ = (expr);       \
    if (!qkv_status_.ok()) return qkv_status_; \
  } while (0)

#define QKV_STATUS_CONCAT_INNER_(a, b) a##b
#define QKV_STATUS_CONCAT_(a, b) QKV_STATUS_CONCAT_INNER_(a, b)

// Evaluates `rexpr` (an absl::StatusOr<T>); on error returns its status from
// the enclosing function, else move-assigns the value to `lhs`, which may be
// a declaration (`auto x`) or an existing variable.
#define QKV_ASSIGN_OR_RETURN(lhs, rexpr) \
  QKV_ASSIGN_OR_RETURN_IMPL_(QKV_STATUS_CONCAT_(qkv_statusor_, __LINE__), lhs, rexpr)

#define QKV_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr)   \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // QKVSHARE_BASE_STATUS_MACROS_H_

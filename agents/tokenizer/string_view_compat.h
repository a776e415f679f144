// File: agents/tokenizer/string_view_compat.h
// -----------------------------------------------------------------------------
// Debian 12's Abseil is built with ABSL_OPTION_USE_STD_STRING_VIEW 0, so
// absl::string_view is its own type with no conversion from or to
// std::string_view. The tokenizer uses std::string_view (the public API
// does); AsAbsl() adapts one for Abseil calls (StrCat, StartsWith,
// heterogeneous flat_hash_map lookups) without copying.
#ifndef QKVSHARE_AGENTS_TOKENIZER_STRING_VIEW_COMPAT_H_
#define QKVSHARE_AGENTS_TOKENIZER_STRING_VIEW_COMPAT_H_

#include <string_view>

#include "absl/strings/string_view.h"

namespace qkvshare::agents::tokenizer_internal {

inline absl::string_view AsAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}
inline std::string_view AsStd(absl::string_view s) { return std::string_view(s.data(), s.size()); }

}  // namespace qkvshare::agents::tokenizer_internal

#endif  // QKVSHARE_AGENTS_TOKENIZER_STRING_VIEW_COMPAT_H_

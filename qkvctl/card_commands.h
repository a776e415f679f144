// File: qkvctl/card_commands.h
// -----------------------------------------------------------------------------
// `qkvctl cards ...`: the daemon's CacheCard store (CardService) and
// .qkvcard files. Same conventions as qkvctl/commands.h (exit codes, one-line
// errors, --json).
//
// Thread safety: thread-compatible.
#ifndef QKVSHARE_QKVCTL_CARD_COMMANDS_H_
#define QKVSHARE_QKVCTL_CARD_COMMANDS_H_

#include <string>

#include "qkvctl/commands.h"

namespace qkvshare::qkvctl {

// cards ls: every card in the store, with store usage.
int RunCardsList(Session& s);

// cards inspect ID|FILE: an existing file is read and fully validated
// locally (cachecard/card_file.h; no daemon needed) and summarized (header,
// fingerprint, tokens, segments, per-layer bytes, bit histograms); exit 4
// when it is not a valid card. Anything else is a card id asked from the
// daemon (GetCard).
int RunCardsInspect(Session& s, const std::string& id_or_file);

// cards export ID -o FILE: streams the card to FILE.partial, then renames it
// to FILE (no partial FILE on error).
int RunCardsExport(Session& s, const std::string& id, const std::string& path);

// cards import FILE: sends FILE to the daemon, prints the stored card.
int RunCardsImport(Session& s, const std::string& path);

// cards rm ID.
int RunCardsRemove(Session& s, const std::string& id);

}  // namespace qkvshare::qkvctl

#endif  // QKVSHARE_QKVCTL_CARD_COMMANDS_H_

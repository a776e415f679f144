#include "qkvctl/card_commands.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "qkvctl/exit_codes.h"
#include "qkvctl/format.h"
#include "qkvctl/table.h"

namespace qkvshare::qkvctl {

namespace {

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

int RunCardsList(Session& s) {
  Client* client = nullptr;
  if (int rc = s.Connect("cards ls", &client); rc != kExitOk) return rc;
  absl::StatusOr<v1::ListCardsResponse> r = client->ListCards();
  if (!r.ok()) return s.Fail("cards ls", r.status());
  s.out() << (s.json() ? MessageJson(*r) : FormatCards(*r));
  return kExitOk;
}

int RunCardsInspect(Session& s, const std::string& id_or_file) {
  const std::string what = absl::StrCat("cards inspect ", id_or_file);
  if (IsRegularFile(id_or_file)) {
    return s.LocalError(absl::StrCat(what,
                                     ": inspecting .qkvcard files is not built in yet; "
                                     "import the card and inspect its id"));
  }
  Client* client = nullptr;
  if (int rc = s.Connect(what, &client); rc != kExitOk) return rc;
  absl::StatusOr<v1::CardInfo> r = client->GetCard(id_or_file);
  if (!r.ok()) return s.Fail(what, r.status());
  s.out() << (s.json() ? MessageJson(*r) : FormatCard(*r));
  return kExitOk;
}

int RunCardsExport(Session& s, const std::string& id, const std::string& path) {
  const std::string what = absl::StrCat("cards export ", id);
  const std::string partial = path + ".partial";
  Client* client = nullptr;
  if (int rc = s.Connect(what, &client); rc != kExitOk) return rc;
  std::ofstream file(partial, std::ios::binary | std::ios::trunc);
  if (!file)
    return s.LocalError(absl::StrCat(what, ": cannot create ", partial, ": ", strerror(errno)));
  absl::StatusOr<int64_t> bytes = client->ExportCard(id, [&](const std::string& chunk) {
    file.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    return static_cast<bool>(file);
  });
  file.close();
  if (!bytes.ok() || !file) {
    std::remove(partial.c_str());
    if (!file) return s.LocalError(absl::StrCat(what, ": writing ", partial, " failed"));
    return s.Fail(what, bytes.status());
  }
  if (std::rename(partial.c_str(), path.c_str()) != 0) {
    int err = errno;
    std::remove(partial.c_str());
    return s.LocalError(
        absl::StrCat(what, ": cannot rename ", partial, " to ", path, ": ", strerror(err)));
  }
  if (s.json()) {
    s.out() << nlohmann::json{{"id", id}, {"file", path}, {"bytes", *bytes}}.dump(2) << "\n";
  } else {
    s.out() << "exported card " << id << " to " << path << " (" << FormatBytes(*bytes) << ")\n";
  }
  return kExitOk;
}

int RunCardsImport(Session& s, const std::string& path) {
  const std::string what = absl::StrCat("cards import ", path);
  std::ifstream file(path, std::ios::binary);
  if (!file) return s.LocalError(absl::StrCat(what, ": ", strerror(errno)));
  Client* client = nullptr;
  if (int rc = s.Connect(what, &client); rc != kExitOk) return rc;
  absl::StatusOr<v1::CardInfo> r = client->ImportCard(file);
  if (!r.ok()) {
    if (r.status().code() == absl::StatusCode::kDataLoss && file.bad()) {
      return s.LocalError(absl::StrCat(what, ": read error"));
    }
    return s.Fail(what, r.status());
  }
  if (s.json()) {
    s.out() << MessageJson(*r);
  } else {
    s.out() << "imported card " << r->id() << " (" << FormatBytes(r->bytes()) << ", " << r->tokens()
            << " tokens)\n";
  }
  return kExitOk;
}

int RunCardsRemove(Session& s, const std::string& id) {
  const std::string what = absl::StrCat("cards rm ", id);
  Client* client = nullptr;
  if (int rc = s.Connect(what, &client); rc != kExitOk) return rc;
  absl::Status st = client->DeleteCard(id);
  if (!st.ok()) return s.Fail(what, st);
  if (s.json()) {
    s.out() << nlohmann::json{{"id", id}, {"deleted", true}}.dump(2) << "\n";
  } else {
    s.out() << "removed card " << id << "\n";
  }
  return kExitOk;
}

}  // namespace qkvshare::qkvctl

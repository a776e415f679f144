#include "qkvctl/card_commands.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>

#include "absl/strings/str_cat.h"
#include "cachecard/card_file.h"
#include "cachecard/inspect.h"
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

nlohmann::json HistogramJson(const std::map<int, int64_t>& h) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [bits, tokens] : h) out[std::to_string(bits)] = tokens;
  return out;
}

// JSON of a card file's summary (cachecard/inspect.h), field names as there.
nlohmann::json SummaryJson(const std::string& path, const cachecard::CardSummary& s) {
  nlohmann::json segments = nlohmann::json::array();
  for (const cachecard::SegmentSummary& g : s.segments) {
    nlohmann::json seg = {{"first_token", g.first_token},
                          {"num_tokens", g.num_tokens},
                          {"section_bytes", g.section_bytes},
                          {"origin_card_id", g.origin_card_id},
                          {"origin_hop_index", g.origin_hop_index}};
    if (g.mode == cachecard::CardMode::kFull) {
      seg["mode"] = "full";
      seg["raw_dtype"] = std::string(DTypeName(g.raw_dtype));
    } else {
      seg["mode"] = "quantized";
      seg["k_group_size"] = g.k_group.group_size;
      seg["v_group_size"] = g.v_group.group_size;
    }
    segments.push_back(seg);
  }
  return {
      {"file", path},
      {"card_id", s.card_id},
      {"parent_id", s.parent_id},
      {"fingerprint", s.fingerprint},
      {"shape",
       {{"num_layers", s.shape.num_layers},
        {"num_kv_heads", s.shape.num_kv_heads},
        {"head_dim", s.shape.head_dim}}},
      {"source_dtype", std::string(DTypeName(s.source_dtype))},
      {"first_token", s.first_token},
      {"num_tokens", s.num_tokens},
      {"total_tokens", s.total_tokens},
      {"card_bytes", s.card_bytes},
      {"metadata_bytes", s.metadata_bytes},
      {"layer_bytes", s.layer_bytes},
      {"avg_bits", s.avg_bits},
      {"effective_bits", s.effective_bits},
      {"fp16_ratio", s.fp16_ratio},
      {"k_bits_histogram", HistogramJson(s.k_bits_histogram)},
      {"v_bits_histogram", HistogramJson(s.v_bits_histogram)},
      {"segments", segments},
      {"provenance",
       {{"source_agent", s.provenance.source_agent},
        {"hop_index", s.provenance.hop_index},
        {"created_unix_ms", s.provenance.created_unix_ms},
        {"quant_policy", s.provenance.quant_policy},
        {"budget_bits", s.provenance.budget_bits}}},
  };
}

// cards inspect FILE: validates the whole file (metadata and every section
// checksum) locally; no daemon needed.
int InspectFile(Session& s, const std::string& path) {
  absl::StatusOr<cachecard::CardPtr> card = cachecard::ImportCard(path);
  if (!card.ok()) {
    s.err() << "qkvctl: cards inspect " << path
            << ": invalid card file: " << card.status().message() << "\n";
    return kExitRejected;
  }
  cachecard::CardSummary summary = cachecard::Summarize((*card)->metadata());
  if (s.json()) {
    s.out() << SummaryJson(path, summary).dump(2) << "\n";
  } else {
    s.out() << "file: " << path << " (checksums verified)\n" << cachecard::FormatSummary(summary);
  }
  return kExitOk;
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
  if (IsRegularFile(id_or_file)) return InspectFile(s, id_or_file);
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
  // Warnings (e.g. a card for a model no agent runs) go to stderr in both
  // modes; the JSON output carries them in `warnings` too.
  for (const std::string& w : r->warnings()) s.err() << "qkvctl: warning: " << w << "\n";
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

#include "qkvctl/table.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace qkvshare::qkvctl {

namespace {

void Pad(std::string* line, const std::string& cell, size_t width, Table::Align align, bool last) {
  size_t fill = width - std::min(width, DisplayWidth(cell));
  if (align == Table::kRight) {
    line->append(fill, ' ');
    line->append(cell);
  } else {
    line->append(cell);
    if (!last) line->append(fill, ' ');
  }
}

}  // namespace

size_t DisplayWidth(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(columns_.size());
  rows_.push_back(std::move(cells));
}

std::string Table::Render() const {
  std::vector<size_t> width(columns_.size());
  for (size_t c = 0; c < columns_.size(); ++c) {
    width[c] = DisplayWidth(columns_[c].header);
    for (const auto& row : rows_) width[c] = std::max(width[c], DisplayWidth(row[c]));
  }
  std::string out;
  auto emit = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (size_t c = 0; c < columns_.size(); ++c) {
      if (c > 0) line.append("  ");
      Pad(&line, cells[c], width[c], columns_[c].align, c + 1 == columns_.size());
    }
    line.erase(line.find_last_not_of(' ') + 1);
    absl::StrAppend(&out, line, "\n");
  };
  std::vector<std::string> header;
  for (const Column& col : columns_) header.push_back(col.header);
  emit(header);
  for (const auto& row : rows_) emit(row);
  return out;
}

std::string KeyValueLines(const std::vector<std::pair<std::string, std::string>>& rows) {
  size_t width = 0;
  for (const auto& [key, value] : rows) width = std::max(width, DisplayWidth(key));
  std::string out;
  for (const auto& [key, value] : rows) {
    absl::StrAppend(&out, key, std::string(width - DisplayWidth(key) + 2, ' '), value, "\n");
  }
  return out;
}

std::string FormatBytes(int64_t bytes) {
  const char* sign = bytes < 0 ? "-" : "";
  double v = std::abs(static_cast<double>(bytes));
  if (v < 1024) return absl::StrCat(bytes, " B");
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = -1;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return absl::StrFormat("%s%.1f %s", sign, v, kUnits[u]);
}

std::string FormatDuration(int64_t ms) {
  if (ms < 0) return absl::StrCat("-", FormatDuration(-ms));
  if (ms < 1000) return absl::StrCat(ms, " ms");
  if (ms < 60'000) return absl::StrFormat("%.1f s", ms / 1000.0);
  int64_t s = ms / 1000;
  if (s < 3600) return absl::StrFormat("%dm %02ds", s / 60, s % 60);
  if (s < 86400) return absl::StrFormat("%dh %02dm", s / 3600, (s / 60) % 60);
  return absl::StrFormat("%dd %02dh", s / 86400, (s / 3600) % 24);
}

std::string FormatFixed(double value, int decimals) {
  return absl::StrFormat("%.*f", decimals, value);
}

}  // namespace qkvshare::qkvctl

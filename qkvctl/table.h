// File: qkvctl/table.h
// -----------------------------------------------------------------------------
// Plain-text tables and human units for qkvctl's default (non --json) output.
// Columns are separated by two spaces, padded to the widest cell (counted in
// UTF-8 code points), left- or right-aligned; no trailing blanks.
//
// Thread safety: Table is thread-compatible; the functions are pure.
//
// Example:
//   Table t({{"NAME"}, {"BYTES", Table::kRight}});
//   t.AddRow({"c1", FormatBytes(2048)});
//   std::cout << t.Render();   // "NAME   BYTES\nc1   2.0 KiB\n"
#ifndef QKVSHARE_QKVCTL_TABLE_H_
#define QKVSHARE_QKVCTL_TABLE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace qkvshare::qkvctl {

class Table {
 public:
  enum Align { kLeft, kRight };
  struct Column {
    std::string header;
    Align align = kLeft;
  };

  explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}

  // Missing cells are blank; extra cells are dropped.
  void AddRow(std::vector<std::string> cells);
  size_t num_rows() const { return rows_.size(); }

  // Header line plus one line per row, each ending in '\n'.
  std::string Render() const;

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// "key  value" lines with the values aligned (keys left-aligned).
std::string KeyValueLines(const std::vector<std::pair<std::string, std::string>>& rows);

// 1023 -> "1023 B", 2048 -> "2.0 KiB", 1.5 MiB -> "1.5 MiB" (binary units, one
// decimal above 1 KiB). Negative values keep their sign.
std::string FormatBytes(int64_t bytes);

// Milliseconds as "850 ms", "12.3 s", "5m 03s", "2h 01m", "3d 04h".
std::string FormatDuration(int64_t ms);

// `value` with `decimals` digits after the point ("4.02").
std::string FormatFixed(double value, int decimals);

// Width of `s` in UTF-8 code points.
size_t DisplayWidth(const std::string& s);

}  // namespace qkvshare::qkvctl

#endif  // QKVSHARE_QKVCTL_TABLE_H_

#include "qkvctl/table.h"

#include "gtest/gtest.h"

namespace qkvshare::qkvctl {
namespace {

TEST(TableTest, AlignsColumnsWithoutTrailingBlanks) {
  Table t({{"ID"}, {"BYTES", Table::kRight}, {"AGENT"}});
  t.AddRow({"c1", "12", "writer"});
  t.AddRow({"c-long", "1.5 MiB", ""});
  t.AddRow({"x"});  // missing cells are blank
  EXPECT_EQ(t.num_rows(), 3u);
  EXPECT_EQ(t.Render(),
            "ID        BYTES  AGENT\n"
            "c1           12  writer\n"
            "c-long  1.5 MiB\n"
            "x\n");
}

TEST(TableTest, WidthCountsCodePoints) {
  EXPECT_EQ(DisplayWidth("héllo"), 5u);
  Table t({{"A"}, {"B"}});
  t.AddRow({"ü", "1"});
  t.AddRow({"abc", "2"});
  EXPECT_EQ(t.Render(), "A    B\nü    1\nabc  2\n");
}

TEST(TableTest, KeyValueLines) {
  EXPECT_EQ(KeyValueLines({{"version", "0.1"}, {"uptime", "5m 03s"}}),
            "version  0.1\n"
            "uptime   5m 03s\n");
}

TEST(TableTest, Units) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(2048), "2.0 KiB");
  EXPECT_EQ(FormatBytes(3 << 19), "1.5 MiB");
  EXPECT_EQ(FormatBytes(268435456), "256.0 MiB");
  EXPECT_EQ(FormatBytes(-2048), "-2.0 KiB");
  EXPECT_EQ(FormatDuration(850), "850 ms");
  EXPECT_EQ(FormatDuration(12'345), "12.3 s");
  EXPECT_EQ(FormatDuration(303'000), "5m 03s");
  EXPECT_EQ(FormatDuration(7'260'000), "2h 01m");
  EXPECT_EQ(FormatDuration(273'600'000), "3d 04h");
  EXPECT_EQ(FormatFixed(4.016, 2), "4.02");
}

}  // namespace
}  // namespace qkvshare::qkvctl

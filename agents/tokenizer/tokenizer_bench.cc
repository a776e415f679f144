// Tokenizer timings (google-benchmark). Run from the workspace root:
//   bazel run -c opt //agents/tokenizer:tokenizer_bench
// Cases:
//   BM_Encode/sp       : stories260K tokenizer.json (SentencePiece-style, no
//                        pre-tokenizer: the whole text is one BPE word)
//   BM_Encode/bytelevel: a byte-level BPE built from the same vocab and merges
//                        ("▁" -> "Ġ", plus the 256 byte characters), GPT-2 regex
//   BM_Decode          : Decode of the same ~8K ids
//   BM_StreamPush/N    : StreamingDetokenizer, per-id cost at sequence length N
//   BM_ReDecodePush/N  : baseline: re-decoding all ids on every Push (what the
//                        fallback for non-tokenizer.json Tokenizers does)
//   BM_Load/external, BM_Encode/external: only when QKVSHARE_BENCH_TOKENIZER
//                        names another tokenizer.json (e.g. Llama-3's)
// The text is the golden stories repeated until it encodes to >= 8192 tokens
// with stories260K (about 21.7 KB).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "agents/tokenizer/byte_level.h"
#include "agents/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace qkvshare::agents {
namespace {

constexpr char kTokenizer[] = "models/stories260K/tokenizer.json";
constexpr char kGolden[] = "models/stories260K/golden/greedy.json";
constexpr size_t kTargetTokens = 8192;

nlohmann::json ReadJson(const char* path) {
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "cannot open %s (run from the workspace root / bazel run)\n", path);
    std::exit(1);
  }
  return nlohmann::json::parse(in);
}

std::string ByteLevelOf(const std::string& piece) {
  std::string bytes;
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, 3, "\u2581") == 0) {
      bytes.push_back(' ');
      i += 3;
    } else {
      bytes.push_back(piece[i++]);
    }
  }
  std::string out;
  tokenizer_internal::AppendByteLevel(bytes, &out);
  return out;
}

// stories260K's vocab and merges in byte-level form, with a GPT-2 pipeline.
std::string ByteLevelJson() {
  const nlohmann::json sp = ReadJson(kTokenizer);
  nlohmann::json vocab = nlohmann::json::object();
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    vocab[std::string(tokenizer_internal::ByteLevelChar(static_cast<uint8_t>(b)))] = next++;
  }
  for (const auto& [piece, id] : sp["model"]["vocab"].items()) {
    if (piece.size() == 6 && piece.compare(0, 3, "<0x") == 0) continue;
    if (piece == "<unk>" || piece == "<s>" || piece == "</s>") continue;
    const std::string converted = ByteLevelOf(piece);
    if (!vocab.contains(converted)) vocab[converted] = next++;
  }
  nlohmann::json merges = nlohmann::json::array();
  for (const auto& m : sp["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    const size_t space = s.find(' ');
    const std::string l = ByteLevelOf(s.substr(0, space));
    const std::string r = ByteLevelOf(s.substr(space + 1));
    if (vocab.contains(l) && vocab.contains(r) && vocab.contains(l + r)) {
      merges.push_back(nlohmann::json::array({l, r}));
    }
  }
  nlohmann::json j = {
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}},
  };
  return j.dump();
}

struct Fixture {
  std::unique_ptr<Tokenizer> sp;
  std::unique_ptr<Tokenizer> byte_level;
  std::string text;
  std::vector<int32_t> ids;
};

const Fixture& GetFixture() {
  static const Fixture* const fixture = [] {
    auto* f = new Fixture();
    f->sp = *Tokenizer::FromFile(kTokenizer);
    f->byte_level = *Tokenizer::FromJson(ByteLevelJson(), "bytelevel-bench");
    const nlohmann::json golden = ReadJson(kGolden);
    std::string stories;
    for (const auto& c : golden["cases"]) stories += c["text"].get<std::string>() + "\n";
    while ((*f->sp->Encode(f->text, false)).size() < kTargetTokens) f->text += stories;
    f->ids = *f->sp->Encode(f->text, false);
    return f;
  }();
  return *fixture;
}

void BM_Encode(benchmark::State& state, bool byte_level) {
  const Fixture& f = GetFixture();
  const Tokenizer& tok = byte_level ? *f.byte_level : *f.sp;
  size_t tokens = 0;
  for (auto _ : state) {
    auto ids = tok.Encode(f.text);
    if (!ids.ok()) state.SkipWithError(std::string(ids.status().message()).c_str());
    tokens = ids.ok() ? ids->size() : 0;
    benchmark::DoNotOptimize(ids);
  }
  state.counters["tokens"] = static_cast<double>(tokens);
  state.counters["bytes"] = static_cast<double>(f.text.size());
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * tokens));
}
BENCHMARK_CAPTURE(BM_Encode, sp, false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Encode, bytelevel, true)->Unit(benchmark::kMillisecond);

void BM_Decode(benchmark::State& state) {
  const Fixture& f = GetFixture();
  for (auto _ : state) benchmark::DoNotOptimize(f.sp->Decode(f.ids));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * f.ids.size()));
}
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond);

// Forwards to a real tokenizer but is another class: StreamingDetokenizer
// takes its re-decoding fallback path.
class Opaque final : public Tokenizer {
 public:
  explicit Opaque(const Tokenizer& t) : t_(t) {}
  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view s, bool a) const override {
    return t_.Encode(s, a);
  }
  std::string Decode(absl::Span<const int32_t> ids, bool skip) const override {
    return t_.Decode(ids, skip);
  }
  int32_t vocab_size() const override { return t_.vocab_size(); }
  std::optional<int32_t> TokenToId(std::string_view s) const override { return t_.TokenToId(s); }
  std::string IdToToken(int32_t id) const override { return t_.IdToToken(id); }
  bool IsSpecial(int32_t id) const override { return t_.IsSpecial(id); }
  std::optional<int32_t> bos_id() const override { return t_.bos_id(); }

 private:
  const Tokenizer& t_;
};

// Time per pushed id over a whole sequence of state.range(0) ids.
void StreamBench(benchmark::State& state, const Tokenizer& tok) {
  const Fixture& f = GetFixture();
  const size_t n = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    StreamingDetokenizer stream(tok);
    size_t bytes = 0;
    for (size_t i = 0; i < n; ++i) bytes += stream.Push(f.ids[i % f.ids.size()]).size();
    bytes += stream.Flush().size();
    benchmark::DoNotOptimize(bytes);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
}

void BM_StreamPush(benchmark::State& state) { StreamBench(state, *GetFixture().sp); }
BENCHMARK(BM_StreamPush)->Arg(256)->Arg(8192);

void BM_ReDecodePush(benchmark::State& state) {
  Opaque opaque(*GetFixture().sp);
  StreamBench(state, opaque);
}
BENCHMARK(BM_ReDecodePush)->Arg(256)->Arg(8192)->Unit(benchmark::kMillisecond);

void BM_LoadExternal(benchmark::State& state, const std::string& path) {
  for (auto _ : state) {
    auto tok = Tokenizer::FromFile(path);
    if (!tok.ok()) state.SkipWithError(std::string(tok.status().message()).c_str());
    benchmark::DoNotOptimize(tok);
  }
}

void BM_EncodeExternal(benchmark::State& state, const std::string& path) {
  auto tok = Tokenizer::FromFile(path);
  if (!tok.ok()) {
    state.SkipWithError(std::string(tok.status().message()).c_str());
    return;
  }
  const Fixture& f = GetFixture();
  size_t tokens = 0;
  for (auto _ : state) {
    auto ids = (*tok)->Encode(f.text);
    tokens = ids.ok() ? ids->size() : 0;
    benchmark::DoNotOptimize(ids);
  }
  state.counters["tokens"] = static_cast<double>(tokens);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * tokens));
}

}  // namespace
}  // namespace qkvshare::agents

int main(int argc, char** argv) {
  if (const char* path = std::getenv("QKVSHARE_BENCH_TOKENIZER"); path != nullptr) {
    benchmark::RegisterBenchmark("BM_Load/external", qkvshare::agents::BM_LoadExternal,
                                 std::string(path))
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("BM_Encode/external", qkvshare::agents::BM_EncodeExternal,
                                 std::string(path))
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

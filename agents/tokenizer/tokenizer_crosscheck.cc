// Compares Tokenizer against reference output of the Hugging Face tokenizers
// library written by hf_reference.js (see docs/tokenizer.md, "Cross-check").
//
//   bazel run //agents/tokenizer:tokenizer_crosscheck -- TOKENIZER_JSON REFERENCE_JSON
// (absolute paths: bazel run changes the working directory).
//
// Prints one line per kind of check with the number of agreeing cases, then
// the first mismatches. Exit status 1 if any Encode result differs.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "agents/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace qkvshare::agents {
namespace {

std::string Show(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
  return s + "]";
}

struct Tally {
  explicit Tally(const char* n) : name(n) {}
  const char* name;
  int agree = 0;
  int total = 0;
  std::vector<std::string> examples;

  void Add(bool ok, const std::string& example) {
    ++total;
    agree += ok;
    if (!ok && examples.size() < 5) examples.push_back(example);
  }
  void Print() const {
    std::printf("%-34s %5d / %5d agree\n", name, agree, total);
    for (const std::string& e : examples) std::printf("    mismatch: %s\n", e.c_str());
  }
};

int Run(const std::string& tokenizer_path, const std::string& reference_path) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromFile(tokenizer_path);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", std::string(tok.status().message()).c_str());
    return 2;
  }
  std::ifstream in(reference_path);
  if (!in) {
    std::fprintf(stderr, "cannot open %s\n", reference_path.c_str());
    return 2;
  }
  const nlohmann::json reference = nlohmann::json::parse(in);
  Tally encode("Encode (with special tokens)");
  Tally encode_plain("Encode (add_special_tokens=false)");
  Tally decode("Decode (skip_special_tokens)");
  Tally decode_all("Decode (keep special tokens)");
  Tally stream("StreamingDetokenizer == Decode");
  Tally random_decode("Decode of random ids");
  Tally random_decode_valid("  ... whose HF text has no U+FFFD");
  for (const nlohmann::json& c : reference.at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    const auto ids = c.at("ids").get<std::vector<int32_t>>();
    const auto ids_plain = c.at("ids_plain").get<std::vector<int32_t>>();
    const std::string quoted = nlohmann::json(text).dump();
    absl::StatusOr<std::vector<int32_t>> got = (*tok)->Encode(text);
    encode.Add(got.ok() && *got == ids,
               quoted + " hf=" + Show(ids) +
                   " ours=" + (got.ok() ? Show(*got) : std::string(got.status().message())));
    got = (*tok)->Encode(text, false);
    encode_plain.Add(got.ok() && *got == ids_plain, quoted);
    const std::string decoded = (*tok)->Decode(ids);
    decode.Add(decoded == c.at("decoded").get<std::string>(),
               quoted + " ours=" + nlohmann::json(decoded).dump());
    decode_all.Add((*tok)->Decode(ids, false) == c.at("decoded_all").get<std::string>(), quoted);
    StreamingDetokenizer detok(**tok);
    std::string streamed;
    for (int32_t id : ids) streamed += detok.Push(id);
    streamed += detok.Flush();
    stream.Add(streamed == decoded, quoted);
  }
  for (const nlohmann::json& c : reference.at("decode_cases")) {
    const auto ids = c.at("ids").get<std::vector<int32_t>>();
    const std::string hf = c.at("text").get<std::string>();
    const std::string ours = (*tok)->Decode(ids, c.at("skip").get<bool>());
    const std::string example =
        Show(ids) + " hf=" + nlohmann::json(hf).dump() + " ours=" + nlohmann::json(ours).dump();
    random_decode.Add(ours == hf, example);
    if (hf.find("\xEF\xBF\xBD") == std::string::npos) random_decode_valid.Add(ours == hf, example);
  }
  std::printf("%s\n", tokenizer_path.c_str());
  for (const Tally* t : {&encode, &encode_plain, &decode, &decode_all, &stream, &random_decode,
                         &random_decode_valid}) {
    t->Print();
  }
  return encode.agree == encode.total && encode_plain.agree == encode_plain.total ? 0 : 1;
}

}  // namespace
}  // namespace qkvshare::agents

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s TOKENIZER_JSON REFERENCE_JSON\n", argv[0]);
    return 2;
  }
  return qkvshare::agents::Run(argv[1], argv[2]);
}

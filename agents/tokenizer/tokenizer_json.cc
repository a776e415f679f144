// Tokenizer::FromFile / Tokenizer::FromJson: tokenizer.json -> BpeTokenizer.
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "agents/tokenizer/bpe_tokenizer.h"
#include "agents/tokenizer/json_util.h"
#include "agents/tokenizer/string_view_compat.h"
#include "agents/tokenizer/tokenizer.h"
#include "base/status_macros.h"

namespace qkvshare::agents {
namespace {

using tokenizer_internal::AddedVocabulary;
using tokenizer_internal::BpeModel;
using tokenizer_internal::BpeTokenizer;
using tokenizer_internal::Decoder;
using tokenizer_internal::FindMember;
using tokenizer_internal::GetObject;
using tokenizer_internal::Json;
using tokenizer_internal::JsonPath;
using tokenizer_internal::Normalizer;
using tokenizer_internal::PostProcessor;
using tokenizer_internal::PreTokenizer;

absl::StatusOr<std::unique_ptr<Tokenizer>> Build(const Json& root, std::string_view origin) {
  if (!root.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(tokenizer_internal::AsAbsl(origin),
                                                   ": expected a JSON object at the top level"));
  }
  const JsonPath top{origin, ""};
  BpeTokenizer::Parts parts;
  if (const Json* n = FindMember(root, "normalizer"); n != nullptr) {
    QKV_ASSIGN_OR_RETURN(parts.normalizer, Normalizer::FromJson(*n, top.Key("normalizer")));
  }
  if (const Json* p = FindMember(root, "pre_tokenizer"); p != nullptr) {
    QKV_ASSIGN_OR_RETURN(parts.pre_tokenizer, PreTokenizer::FromJson(*p, top.Key("pre_tokenizer")));
  }
  QKV_ASSIGN_OR_RETURN(const Json* model, GetObject(root, "model", top));
  QKV_ASSIGN_OR_RETURN(parts.model, BpeModel::FromJson(*model, top.Key("model")));
  QKV_ASSIGN_OR_RETURN(parts.added,
                       AddedVocabulary::FromJson(FindMember(root, "added_tokens"),
                                                 parts.normalizer.get(), top.Key("added_tokens")));
  QKV_ASSIGN_OR_RETURN(
      parts.post_processor,
      PostProcessor::FromJson(FindMember(root, "post_processor"), top.Key("post_processor")));
  QKV_ASSIGN_OR_RETURN(parts.decoder,
                       Decoder::FromJson(FindMember(root, "decoder"), top.Key("decoder")));
  QKV_ASSIGN_OR_RETURN(std::unique_ptr<BpeTokenizer> tokenizer,
                       BpeTokenizer::Create(std::move(parts)));
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat("tokenizer file not found: ", path));
  }
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": is a directory (expected a tokenizer.json file)"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot open tokenizer file ", path, ": ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::DataLossError(absl::StrCat("error reading tokenizer file ", path));
  }
  return FromJson(text.str(), path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json,
                                                               std::string_view origin) {
  Json root;
  try {
    root = Json::parse(json.data(), json.data() + json.size());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(tokenizer_internal::AsAbsl(origin), ": malformed JSON: ", e.what()));
  }
  // The accessors check types before every get<>(); this catch is the module
  // boundary's guard for anything they missed.
  try {
    return Build(root, origin);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(tokenizer_internal::AsAbsl(origin), ": unexpected JSON content: ", e.what()));
  }
}

}  // namespace qkvshare::agents

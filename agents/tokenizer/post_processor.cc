#include "agents/tokenizer/post_processor.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace qkvshare::agents::tokenizer_internal {
namespace {

// ["</s>", 2] of Roberta/BertProcessing -> 2.
absl::StatusOr<int32_t> TokenPairId(const Json& object, std::string_view key,
                                    const JsonPath& where) {
  const Json* pair = FindMember(object, key);
  if (pair == nullptr || !pair->is_array() || pair->size() != 2 ||
      !(*pair)[1].is_number_integer() || (*pair)[1].get<int64_t>() < 0) {
    return where.Key(key).Error("expected [\"token\", id]");
  }
  return static_cast<int32_t>((*pair)[1].get<int64_t>());
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> PostProcessor::FromJson(const Json* value,
                                                                       const JsonPath& where) {
  std::unique_ptr<PostProcessor> p(new PostProcessor());
  if (value != nullptr) QKV_RETURN_IF_ERROR(p->Add(*value, where));
  return p;
}

void PostProcessor::Wrap(std::vector<Item> outer) {
  std::vector<Item> result;
  for (Item& item : outer) {
    if (item.is_sequence) {
      result.insert(result.end(), items_.begin(), items_.end());
    } else {
      result.push_back(std::move(item));
    }
  }
  items_ = std::move(result);
}

absl::Status PostProcessor::Add(const Json& value, const JsonPath& where) {
  QKV_ASSIGN_OR_RETURN(const std::string type, GetType(value, where));
  if (type == "Sequence") {
    QKV_ASSIGN_OR_RETURN(const Json* list, GetArray(value, "processors", where));
    for (size_t i = 0; i < list->size(); ++i) {
      QKV_RETURN_IF_ERROR(Add((*list)[i], where.Key("processors").Index(i)));
    }
    return absl::OkStatus();
  }
  if (type == "ByteLevel") return absl::OkStatus();
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    QKV_ASSIGN_OR_RETURN(const int32_t cls, TokenPairId(value, "cls", where));
    QKV_ASSIGN_OR_RETURN(const int32_t sep, TokenPairId(value, "sep", where));
    Wrap({Item{{cls}, false}, Item{{}, true}, Item{{sep}, false}});
    return absl::OkStatus();
  }
  if (type != "TemplateProcessing") {
    return where.Key("type").Error(absl::StrCat(
        "unsupported post_processor \"", type,
        "\" (supported: TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel, "
        "Sequence)"));
  }
  QKV_ASSIGN_OR_RETURN(const Json* single, GetArray(value, "single", where));
  const Json* specials = FindMember(value, "special_tokens");
  std::vector<Item> outer;
  for (size_t i = 0; i < single->size(); ++i) {
    const JsonPath at = where.Key("single").Index(i);
    const Json& piece = (*single)[i];
    if (const Json* seq = FindMember(piece, "Sequence"); seq != nullptr) {
      QKV_ASSIGN_OR_RETURN(const std::string id, GetString(*seq, "id", at.Key("Sequence")));
      if (id != "A") return at.Key("Sequence").Key("id").Error("a single template uses only $A");
      outer.push_back(Item{{}, true});
      continue;
    }
    const Json* special = FindMember(piece, "SpecialToken");
    if (special == nullptr) return at.Error("expected {\"Sequence\"} or {\"SpecialToken\"}");
    QKV_ASSIGN_OR_RETURN(const std::string name, GetString(*special, "id", at.Key("SpecialToken")));
    const Json* entry = specials == nullptr ? nullptr : FindMember(*specials, name);
    const JsonPath entry_path = where.Key("special_tokens").Key(name);
    if (entry == nullptr) return entry_path.Error("missing (used by the single template)");
    QKV_ASSIGN_OR_RETURN(const Json* ids, GetArray(*entry, "ids", entry_path));
    Item item;
    for (const Json& id : *ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0) {
        return entry_path.Key("ids").Error("expected non-negative integer ids");
      }
      item.ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
    outer.push_back(std::move(item));
  }
  Wrap(std::move(outer));
  return absl::OkStatus();
}

std::vector<int32_t> PostProcessor::Apply(const std::vector<int32_t>& ids) const {
  if (items_.size() == 1 && items_[0].is_sequence) return ids;  // just $A
  std::vector<int32_t> out;
  out.reserve(ids.size() + items_.size());
  for (const Item& item : items_) {
    const std::vector<int32_t>& part = item.is_sequence ? ids : item.ids;
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

std::optional<int32_t> PostProcessor::bos_id() const {
  if (items_.empty() || items_[0].is_sequence || items_[0].ids.empty()) return std::nullopt;
  return items_[0].ids[0];
}

}  // namespace qkvshare::agents::tokenizer_internal

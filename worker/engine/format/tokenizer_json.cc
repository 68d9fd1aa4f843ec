#include "format/tokenizer_json.h"

#include "format/bounded_json.h"
#include "format/limits.h"

namespace mq::format {
namespace {

using json = nlohmann::json;

Status CheckTemplate(const json& step, const std::string& path) {
  auto single = step.find("single");
  if (single != step.end() && single->is_array() && single->size() > kMaxTemplatePieces)
    return DataLossError(path + ".single has " + std::to_string(single->size()) + " entries, more than " +
                         std::to_string(kMaxTemplatePieces));
  auto specials = step.find("special_tokens");
  if (specials == step.end() || !specials->is_object()) return OkStatus();
  for (auto it = specials->begin(); it != specials->end(); ++it) {
    if (!it->is_object()) continue;
    auto ids = it->find("ids");
    if (ids != it->end() && ids->is_array() && ids->size() > kMaxTemplateIds)
      return DataLossError(path + ".special_tokens: a special token has " + std::to_string(ids->size()) +
                           " ids, more than " + std::to_string(kMaxTemplateIds));
  }
  return OkStatus();
}

}  // namespace

Status CheckTokenizerJson(const json& root) {
  if (!root.is_object()) return DataLossError(std::string("top level must be a JSON object, got ") + root.type_name());
  // Types and presence are the tokenizer's to report (it names each field); this check bounds
  // what is there before anything is built from it.
  auto model = root.find("model");
  if (model == root.end() || !model->is_object()) return OkStatus();
  auto vocab = model->find("vocab");
  if (vocab != model->end() && vocab->is_object() && vocab->size() > kMaxVocabEntries)
    return DataLossError("model.vocab has " + std::to_string(vocab->size()) + " entries, more than the limit of " +
                         std::to_string(kMaxVocabEntries));
  auto merges = model->find("merges");
  if (merges != model->end() && merges->is_array() && merges->size() > kMaxMerges)
    return DataLossError("model.merges has " + std::to_string(merges->size()) + " entries, more than the limit of " +
                         std::to_string(kMaxMerges));
  auto added = root.find("added_tokens");
  if (added != root.end() && !added->is_null()) {
    if (added->is_array() && added->size() > kMaxAddedTokens)
      return DataLossError("added_tokens has " + std::to_string(added->size()) + " entries, more than the limit of " +
                           std::to_string(kMaxAddedTokens));
    for (size_t i = 0; added->is_array() && i < added->size(); ++i) {
      const json& t = (*added)[i];
      auto content = t.is_object() ? t.find("content") : t.end();
      if (content != t.end() && content->is_string() &&
          content->get_ref<const std::string&>().size() > kMaxAddedTokenBytes)
        return DataLossError("added_tokens[" + std::to_string(i) + "].content is " +
                             std::to_string(content->get_ref<const std::string&>().size()) +
                             " bytes, more than the limit of " + std::to_string(kMaxAddedTokenBytes));
    }
  }
  auto post = root.find("post_processor");
  if (post != root.end() && post->is_object()) {
    auto processors = post->find("processors");
    if (processors != post->end() && processors->is_array()) {
      if (processors->size() > kMaxTemplatePieces)
        return DataLossError("post_processor.processors has too many entries");
      for (size_t i = 0; i < processors->size(); ++i)
        if ((*processors)[i].is_object())
          MQ_RETURN_IF_ERROR(
              CheckTemplate((*processors)[i], "post_processor.processors[" + std::to_string(i) + "]"));
    } else {
      MQ_RETURN_IF_ERROR(CheckTemplate(*post, "post_processor"));
    }
  }
  return OkStatus();
}

StatusOr<json> ParseTokenizerJson(std::string_view text, const std::string& source) {
  MQ_ASSIGN_OR_RETURN(json root, ParseJson(text, source, kMaxTokenizerJsonBytes, StatusCode::kDataLoss));
  Status s = CheckTokenizerJson(root);
  if (!s.ok()) return s.WithContext(source);
  return root;
}

}  // namespace mq::format

#include "tokenizer/post_processor.h"

#include <string>

#include "format/limits.h"
#include "tokenizer/json_fields.h"

namespace mq {
namespace {

using json_fields::Quote;

}  // namespace

StatusOr<PostProcessor> PostProcessor::FromJson(const nlohmann::json& spec) {
  PostProcessor processor;
  if (spec.is_null()) return processor;
  std::vector<std::pair<const nlohmann::json*, std::string>> steps;
  MQ_ASSIGN_OR_RETURN(std::string_view type, json_fields::Type(spec, "post_processor"));
  if (type == "Sequence") {
    MQ_ASSIGN_OR_RETURN(const nlohmann::json* list,
                        json_fields::Member(spec, "post_processor", "processors"));
    if (!list->is_array()) return DataLossError("post_processor.processors must be an array");
    for (size_t i = 0; i < list->size(); ++i) {
      steps.emplace_back(&(*list)[i], "post_processor.processors[" + std::to_string(i) + "]");
    }
  } else {
    steps.emplace_back(&spec, "post_processor");
  }

  bool have_template = false;
  for (const auto& [step, path] : steps) {
    MQ_ASSIGN_OR_RETURN(std::string_view step_type, json_fields::Type(*step, path));
    // ByteLevel's post-processing only trims character offsets; ids are untouched.
    if (step_type == "ByteLevel") continue;
    if (step_type != "TemplateProcessing") {
      return UnimplementedError(path + ": post-processor type " + Quote(step_type) +
                                " is not supported (only ByteLevel and TemplateProcessing)");
    }
    if (have_template) {
      return UnimplementedError(path + ": more than one TemplateProcessing is not supported");
    }
    have_template = true;

    MQ_ASSIGN_OR_RETURN(const nlohmann::json* single, json_fields::Member(*step, path, "single"));
    MQ_ASSIGN_OR_RETURN(const nlohmann::json* specials,
                        json_fields::Member(*step, path, "special_tokens"));
    if (!single->is_array()) return DataLossError(path + ".single must be an array");
    if (!specials->is_object()) return DataLossError(path + ".special_tokens must be an object");
    std::vector<Piece> pieces;
    int sequences = 0;
    for (size_t i = 0; i < single->size(); ++i) {
      const nlohmann::json& entry = (*single)[i];
      const std::string where = path + ".single[" + std::to_string(i) + "]";
      if (!entry.is_object() || entry.size() != 1) {
        return DataLossError(where + " must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
      const std::string& kind = entry.begin().key();
      const nlohmann::json& body = entry.begin().value();
      if (kind == "Sequence") {
        MQ_ASSIGN_OR_RETURN(std::string id, json_fields::String(body, where + ".Sequence", "id"));
        if (id != "A") {
          return DataLossError(where + ": the single-sequence template refers to sequence " +
                               Quote(id) + " (only \"A\" exists)");
        }
        pieces.push_back(Piece{true, {}});
        ++sequences;
      } else if (kind == "SpecialToken") {
        MQ_ASSIGN_OR_RETURN(std::string name,
                            json_fields::String(body, where + ".SpecialToken", "id"));
        const auto it = specials->find(name);
        if (it == specials->end()) {
          return DataLossError(where + ": special token " + Quote(name) + " is not in " + path +
                               ".special_tokens");
        }
        const std::string special_path = path + ".special_tokens[" + Quote(name) + "]";
        MQ_ASSIGN_OR_RETURN(const nlohmann::json* ids,
                            json_fields::Member(*it, special_path, "ids"));
        if (!ids->is_array()) return DataLossError(special_path + ".ids must be an array");
        Piece piece;
        for (const auto& id : *ids) {
          if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
            return DataLossError(special_path + ".ids holds " + id.dump() +
                                 ", not a non-negative 32-bit id");
          }
          piece.ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
        }
        pieces.push_back(std::move(piece));
      } else {
        return DataLossError(where + ": unknown template entry " + Quote(kind));
      }
    }
    // Every encoding gets these ids: a template that adds more than the bound is refused, so a
    // small file cannot make each encoding huge.
    size_t added_ids = 0;
    for (const Piece& piece : pieces) added_ids += piece.ids.size();
    if (added_ids > format::kMaxTemplateIds) {
      return DataLossError(path + ".single adds " + std::to_string(added_ids) +
                           " ids to every encoding, more than the limit of " +
                           std::to_string(format::kMaxTemplateIds));
    }
    if (sequences != 1) {
      return DataLossError(path + ".single must contain the sequence exactly once");
    }
    processor.single_ = std::move(pieces);
  }
  return processor;
}

bool PostProcessor::adds_nothing() const { return single_.size() == 1 && single_[0].is_sequence; }

std::vector<int32_t> PostProcessor::Apply(std::vector<int32_t> ids) const {
  if (adds_nothing()) return ids;
  std::vector<int32_t> out;
  for (const Piece& piece : single_) {
    if (piece.is_sequence) {
      out.insert(out.end(), ids.begin(), ids.end());
    } else {
      out.insert(out.end(), piece.ids.begin(), piece.ids.end());
    }
  }
  return out;
}

std::vector<int32_t> PostProcessor::TemplateIds() const {
  std::vector<int32_t> ids;
  for (const Piece& piece : single_) ids.insert(ids.end(), piece.ids.begin(), piece.ids.end());
  return ids;
}

}  // namespace mq

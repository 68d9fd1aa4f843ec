#include "tokenizer/normalizer.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>
#include <unicode/utypes.h>

#include "tokenizer/json_fields.h"

namespace mq {
namespace {

// Steps other than NFC are refused: applying them wrongly would silently change token ids.
Status CheckNfcStep(const nlohmann::json& spec, const std::string& path) {
  MQ_ASSIGN_OR_RETURN(std::string_view type, json_fields::Type(spec, path));
  if (type != "NFC") {
    return UnimplementedError(path + ": normalizer type " + json_fields::Quote(type) +
                              " is not supported (only NFC)");
  }
  return OkStatus();
}

}  // namespace

StatusOr<Normalizer> Normalizer::FromJson(const nlohmann::json& spec) {
  if (spec.is_null()) return Identity();
  MQ_ASSIGN_OR_RETURN(std::string_view type, json_fields::Type(spec, "normalizer"));
  if (type != "Sequence") {
    MQ_RETURN_IF_ERROR(CheckNfcStep(spec, "normalizer"));
    return Nfc();
  }
  MQ_ASSIGN_OR_RETURN(const nlohmann::json* steps,
                      json_fields::Member(spec, "normalizer", "normalizers"));
  if (!steps->is_array()) return DataLossError("normalizer.normalizers must be an array");
  // NFC is idempotent, so any number of NFC steps equals one.
  bool nfc = false;
  for (size_t i = 0; i < steps->size(); ++i) {
    MQ_RETURN_IF_ERROR(
        CheckNfcStep((*steps)[i], "normalizer.normalizers[" + std::to_string(i) + "]"));
    nfc = true;
  }
  return Normalizer(nfc);
}

StatusOr<std::string> Normalizer::Normalize(std::string_view text) const {
  if (!nfc_) return std::string(text);
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(err);
  if (U_FAILURE(err) || nfc == nullptr) {
    return InternalError(std::string("ICU NFC normalizer unavailable: ") + u_errorName(err));
  }
  const icu::StringPiece piece(text.data(), static_cast<int32_t>(text.size()));
  // Nearly all input is already NFC; the quick check avoids a copy through ICU's buffers.
  if (nfc->isNormalizedUTF8(piece, err) && U_SUCCESS(err)) return std::string(text);
  err = U_ZERO_ERROR;
  std::string out;
  out.reserve(text.size());
  icu::StringByteSink<std::string> sink(&out);
  nfc->normalizeUTF8(0, piece, sink, nullptr, err);
  if (U_FAILURE(err)) {
    return InternalError(std::string("ICU NFC normalization failed: ") + u_errorName(err));
  }
  return out;
}

}  // namespace mq

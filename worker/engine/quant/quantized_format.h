// The version of the quantized export (config.json `quantization_config.format_version`) and how
// each version stores the linears' weights (`weight_storage`). One owner for both: the writer
// (ExportQuantizedModel), the loader (LoadQuantizedModel) and the config check every reader runs
// (QuantSpec::FromJson, which the server's upload check also calls) read them from here.
//   1: every quantized weight one int8 per element, 4-bit levels too ("int8_unpacked").
//   2: 8-bit weights as in 1; 4-bit weights two per byte ("int4_packed", model/int4_pack.h).
// A reader older than a version refuses it (FromJson: Unimplemented) instead of misreading it.
#pragma once

namespace mq::quant {

inline constexpr int kQuantizedFormatVersion = 2;        // what ExportQuantizedModel writes by default
inline constexpr int kOldestQuantizedFormatVersion = 1;  // the oldest version still loaded

inline bool IsReadableFormatVersion(int version) {
  return version >= kOldestQuantizedFormatVersion && version <= kQuantizedFormatVersion;
}

// The `weight_storage` of a (format_version, weight_bits) pair.
inline const char* WeightStorageName(int format_version, int weight_bits) {
  return format_version >= 2 && weight_bits == 4 ? "int4_packed" : "int8_unpacked";
}

}  // namespace mq::quant

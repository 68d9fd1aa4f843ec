// The version of the quantized export (config.json `quantization_config.format_version`) and how
// each version stores the linears' weights (`weight_storage`). One owner for both: the writer
// (ExportQuantizedModel), the loader (LoadQuantizedModel) and the config check every reader runs
// (QuantSpec::FromJson, which the server's upload check also calls) read them from here.
//   1: every quantized weight one int8 per element, 4-bit levels too ("int8_unpacked").
//   2: 8-bit weights as in 1; 4-bit weights two per byte ("int4_packed", model/int4_pack.h).
//   3: as 2, and a 4-bit export may keep some layers at 8-bit weights (`w8_layers`, ascending
//      layer indices): those layers' linears are stored as 8-bit weights are (I8 [out, in]).
// A reader older than a version refuses it (FromJson: Unimplemented) instead of misreading it.
#pragma once

namespace mq::quant {

inline constexpr int kQuantizedFormatVersion = 3;        // what ExportQuantizedModel writes by default
inline constexpr int kOldestQuantizedFormatVersion = 1;  // the oldest version still loaded

inline bool IsReadableFormatVersion(int version) {
  return version >= kOldestQuantizedFormatVersion && version <= kQuantizedFormatVersion;
}

// The `weight_storage` of a (format_version, weight_bits) pair: the model's weight_bits, which
// layers in w8_layers do not use.
inline const char* WeightStorageName(int format_version, int weight_bits) {
  return format_version >= 2 && weight_bits == 4 ? "int4_packed" : "int8_unpacked";
}

// The oldest version that holds per-layer weight widths (w8_layers).
inline constexpr int kMixedWidthFormatVersion = 3;

}  // namespace mq::quant

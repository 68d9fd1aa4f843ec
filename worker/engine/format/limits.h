// Every bound the model-format readers put on untrusted input, in one place: the server's
// commit-time check and the engine's loaders read the same files with the same limits.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mq::format {

// JSON of any model file: arrays and objects nest at most this deep. The real files nest four
// (tokenizer.json) or three (config.json with quantization_config) levels; the bound keeps any
// recursive walk of a parsed value (dump, copy, compare) far from the stack's end.
inline constexpr size_t kMaxJsonDepth = 64;

// config.json is a few hundred bytes; 1 MiB leaves room for long comments and metadata.
inline constexpr uint64_t kMaxConfigJsonBytes = uint64_t{1} << 20;
// tokenizer.json: GPT-NeoX's is 2 MB, the largest public ones (250k vocabularies) about 35 MB.
inline constexpr uint64_t kMaxTokenizerJsonBytes = uint64_t{128} << 20;
// model.safetensors.index.json lists one line per tensor.
inline constexpr uint64_t kMaxIndexJsonBytes = uint64_t{64} << 20;

// safetensors: the format's reference reader refuses headers over 100 MB.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull * 1000 * 1000;
inline constexpr size_t kMaxTensorsPerFile = 1'000'000;
inline constexpr size_t kMaxTensorDims = 8;
inline constexpr size_t kMaxShards = 4096;
inline constexpr size_t kMaxMetadataEntries = 4096;

// Names that become map keys, messages or file names: tensor names (letters, digits, "._-/:")
// and shard file names (a plain name, no separator).
inline constexpr size_t kMaxTensorNameBytes = 512;
inline constexpr size_t kMaxFileNameBytes = 255;

// tokenizer.json. Vocabulary and merges: far above any real file (GPT-NeoX: 50k; the largest
// public: a few hundred k), far below what would exhaust memory.
inline constexpr size_t kMaxVocabEntries = 10'000'000;
inline constexpr size_t kMaxMerges = 10'000'000;
inline constexpr size_t kMaxAddedTokens = 100'000;
// The added-token matcher walks a trie as far as the text matches a token: a token's length
// bounds the work per input byte, so encoding stays linear in the text.
inline constexpr size_t kMaxAddedTokenBytes = 256;
// A template post-processor adds these ids to every encoding; the bound keeps a small file from
// expanding into a huge one (one special token of many ids referenced many times).
inline constexpr size_t kMaxTemplateIds = 1024;
inline constexpr size_t kMaxTemplatePieces = 64;

// quantization_config: one online transform per layer at most.
inline constexpr size_t kMaxOnlineTransforms = 1024;

}  // namespace mq::format

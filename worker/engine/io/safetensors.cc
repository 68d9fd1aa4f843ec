#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "cpu/parallel_for.h"
#include "format/bounded_json.h"
#include "format/limits.h"
#include "format/safe_name.h"
#include "format/safetensors_index.h"

namespace mq {
namespace {

using json = nlohmann::json;

Status Corrupt(const std::string& path, const std::string& what) {
  return DataLossError(path + ": corrupt safetensors: " + what);
}

bool CheckedMul(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

template <typename T>
T LoadUnaligned(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated against overflow when the view was created
  return n;
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::vector<float> ToFloat32(const TensorView& t) {
  const int64_t n = t.numel();
  std::vector<float> out(static_cast<size_t>(n));
  const uint8_t* p = t.data;
  switch (t.dtype) {
    case DType::kF32:
      if (n > 0) std::memcpy(out.data(), p, static_cast<size_t>(n) * 4);
      break;
    case DType::kF16:  // chunked over the cores: a 2.8B model converts 2.8e9 of them on load
      cpu::ParallelFor(n, 1 << 16, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) out[i] = HalfToFloat(LoadUnaligned<uint16_t>(p + 2 * i));
      });
      break;
    case DType::kBF16:
      cpu::ParallelFor(n, 1 << 16, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) out[i] = BFloat16ToFloat(LoadUnaligned<uint16_t>(p + 2 * i));
      });
      break;
    case DType::kI8:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<int8_t>(p[i]));
      break;
    case DType::kI32:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(LoadUnaligned<int32_t>(p + 4 * i));
      break;
    case DType::kI64:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(LoadUnaligned<int64_t>(p + 8 * i));
      break;
    case DType::kU8:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(p[i]);
      break;
  }
  return out;
}

StatusOr<std::vector<int64_t>> ToInt64(const TensorView& t) {
  const int64_t n = t.numel();
  std::vector<int64_t> out(static_cast<size_t>(n));
  const uint8_t* p = t.data;
  switch (t.dtype) {
    case DType::kI8:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int8_t>(p[i]);
      return out;
    case DType::kI32:
      for (int64_t i = 0; i < n; ++i) out[i] = LoadUnaligned<int32_t>(p + 4 * i);
      return out;
    case DType::kI64:
      for (int64_t i = 0; i < n; ++i) out[i] = LoadUnaligned<int64_t>(p + 8 * i);
      return out;
    default:
      return InvalidArgumentError(t.file + ": tensor \"" + t.name + "\" has dtype " +
                                  DTypeName(t.dtype) + ", expected an integer type");
  }
}

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  MQ_ASSIGN_OR_RETURN(auto mapped, MappedFile::Open(path));
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile(std::move(mapped)));
  MQ_RETURN_IF_ERROR(file->Parse());
  return file;
}

Status SafetensorsFile::Parse() {
  const std::string& path = file_->path();
  const uint8_t* base = file_->data();
  const uint64_t file_size = file_->size();
  if (file_size < 8) return Corrupt(path, "file is " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length");
  const uint64_t header_len = LoadUnaligned<uint64_t>(base);  // little-endian on every target we build for
  if (header_len > kMaxHeaderBytes) {  // = format::kMaxSafetensorsHeaderBytes
    return Corrupt(path, "header length " + std::to_string(header_len) + " exceeds the " +
                             std::to_string(kMaxHeaderBytes) + "-byte limit");
  }
  if (header_len > file_size - 8) {
    return Corrupt(path, "header length " + std::to_string(header_len) + " runs past the end of the " +
                             std::to_string(file_size) + "-byte file");
  }
  const char* header_begin = reinterpret_cast<const char*>(base + 8);
  const uint64_t data_size = file_size - 8 - header_len;
  const uint8_t* data = base + 8 + header_len;

  // nlohmann keeps the last of duplicate keys silently; a file with two entries of one name is
  // ambiguous, so the parse callback records duplicates at the top level.
  std::set<std::string> seen_keys;
  std::string duplicate;
  json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) {
      const std::string key = parsed.get<std::string>();
      if (!seen_keys.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  const Status nesting = format::CheckJsonNesting(std::string_view(header_begin, header_len), format::kMaxJsonDepth);
  if (!nesting.ok()) return Corrupt(path, "header: " + nesting.message());
  json header;
  try {
    header = json::parse(header_begin, header_begin + header_len, on_event);
  } catch (const json::exception& e) {
    return Corrupt(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) return Corrupt(path, "header is not a JSON object");
  if (!duplicate.empty()) return Corrupt(path, "duplicate tensor name " + format::Printable(duplicate));
  if (header.size() > format::kMaxTensorsPerFile + 1)
    return Corrupt(path, "header lists " + std::to_string(header.size()) + " entries, more than the limit of " +
                             std::to_string(format::kMaxTensorsPerFile));

  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) return Corrupt(path, "__metadata__ is not an object");
      if (entry.size() > format::kMaxMetadataEntries) return Corrupt(path, "__metadata__ has too many entries");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string())
          return Corrupt(path, "__metadata__ value " + format::Printable(m.key()) + " is not a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const Status name_ok = format::CheckTensorName(name, "tensor name");
    if (!name_ok.ok()) return Corrupt(path, name_ok.message());
    const std::string where = "tensor \"" + name + "\"";
    if (!entry.is_object()) return Corrupt(path, where + " entry is not an object");
    auto dt = entry.find("dtype");
    auto sh = entry.find("shape");
    auto off = entry.find("data_offsets");
    if (dt == entry.end() || !dt->is_string()) return Corrupt(path, where + " has no string dtype");
    if (sh == entry.end() || !sh->is_array()) return Corrupt(path, where + " has no shape array");
    if (sh->size() > format::kMaxTensorDims)
      return Corrupt(path, where + " has " + std::to_string(sh->size()) + " dimensions, more than " +
                               std::to_string(format::kMaxTensorDims));
    if (off == entry.end() || !off->is_array() || off->size() != 2)
      return Corrupt(path, where + " has no [begin, end] data_offsets");
    auto dtype = ParseDType(dt->get<std::string>());
    if (!dtype.ok()) return Corrupt(path, where + ": " + dtype.status().message());

    TensorView view;
    view.name = name;
    view.dtype = *dtype;
    view.file = path;
    uint64_t numel = 1;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned()) return Corrupt(path, where + " has a shape entry that is not a non-negative integer");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) || !CheckedMul(numel, dim, &numel))
        return Corrupt(path, where + " shape overflows");
      view.shape.push_back(static_cast<int64_t>(dim));
    }
    uint64_t nbytes = 0;
    if (!CheckedMul(numel, DTypeSize(view.dtype), &nbytes) ||
        numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return Corrupt(path, where + " shape " + ShapeToString(view.shape) + " overflows in bytes");
    if (!(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
      return Corrupt(path, where + " data_offsets are not non-negative integers");
    const uint64_t begin = (*off)[0].get<uint64_t>();
    const uint64_t end = (*off)[1].get<uint64_t>();
    if (begin > end) return Corrupt(path, where + " data_offsets begin " + std::to_string(begin) + " > end " + std::to_string(end));
    if (end > data_size)
      return Corrupt(path, where + " data ends at " + std::to_string(end) + " past the " +
                               std::to_string(data_size) + "-byte data section");
    if (end - begin != nbytes)
      return Corrupt(path, where + " has " + std::to_string(end - begin) + " bytes but " + DTypeName(view.dtype) +
                               ShapeToString(view.shape) + " needs " + std::to_string(nbytes));
    view.data = data + begin;
    view.nbytes = static_cast<size_t>(nbytes);
    auto [pos, inserted] = tensors_.emplace(name, std::move(view));
    spans.push_back({begin, end, &pos->first});
  }

  // The data section must be covered exactly once: no overlap (two tensors aliasing one buffer),
  // no hole, nothing trailing.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (const Span& s : spans) {
    if (s.begin < cursor) return Corrupt(path, "tensor \"" + *s.name + "\" overlaps the tensor before it");
    if (s.begin > cursor) return Corrupt(path, "gap in the data section before tensor \"" + *s.name + "\"");
    cursor = s.end;
  }
  if (cursor != data_size)
    return Corrupt(path, "data section has " + std::to_string(data_size - cursor) + " bytes not owned by any tensor");
  return OkStatus();
}

const TensorView* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

StatusOr<SafetensorsModel> SafetensorsModel::OpenFiles(const std::vector<std::string>& paths) {
  SafetensorsModel model;
  for (const std::string& p : paths) {
    MQ_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> f, SafetensorsFile::Open(p));
    std::shared_ptr<SafetensorsFile> shared(std::move(f));
    for (const auto& [name, view] : shared->tensors()) {
      if (!model.index_.emplace(name, &view).second)
        return DataLossError(p + ": tensor \"" + name + "\" also appears in another file of the model");
    }
    model.files_.push_back(std::move(shared));
  }
  return model;
}

StatusOr<SafetensorsModel> SafetensorsModel::OpenDirectory(const std::string& dir) {
  namespace fs = std::filesystem;
  return OpenResolved(
      [&dir](const std::string& name) -> std::optional<std::string> {
        std::error_code ec;
        const fs::path p = fs::path(dir) / name;  // `name` is a checked plain file name
        if (!fs::exists(p, ec)) return std::nullopt;
        return p.string();
      },
      dir);
}

StatusOr<SafetensorsModel> SafetensorsModel::OpenResolved(const FileResolver& local_path_of, const std::string& where) {
  const std::optional<std::string> index_path = local_path_of("model.safetensors.index.json");
  if (!index_path) {
    const std::optional<std::string> single = local_path_of("model.safetensors");
    if (!single) return NotFoundError(where + ": neither model.safetensors nor model.safetensors.index.json is present");
    return OpenFiles({*single});
  }
  MQ_ASSIGN_OR_RETURN(std::string index_text,
                      format::ReadFileBounded(*index_path, format::kMaxIndexJsonBytes, StatusCode::kDataLoss));
  // Shard names come from an untrusted file: ParseSafetensorsIndex accepts only plain file names,
  // so a shard never resolves outside the model.
  MQ_ASSIGN_OR_RETURN(format::SafetensorsIndex index, format::ParseSafetensorsIndex(index_text, *index_path));
  std::map<std::string, std::string> shard_paths;  // shard name → local path
  std::vector<std::string> paths;
  for (const std::string& shard : index.shards) {
    const std::optional<std::string> p = local_path_of(shard);
    if (!p) return NotFoundError(*index_path + ": shard \"" + shard + "\" is missing");
    shard_paths[shard] = *p;
    paths.push_back(*p);
  }
  MQ_ASSIGN_OR_RETURN(SafetensorsModel model, OpenFiles(paths));
  for (const auto& [name, shard] : index.tensor_to_shard) {
    const TensorView* view = model.Find(name);
    if (view == nullptr || view->file != shard_paths[shard])
      return DataLossError(*index_path + ": tensor \"" + name + "\" is listed in shard \"" + shard +
                           "\" but that shard does not hold it");
  }
  if (model.size() != index.tensor_to_shard.size())
    return DataLossError(*index_path + ": the shards hold " + std::to_string(model.size()) +
                         " tensors but the index lists " + std::to_string(index.tensor_to_shard.size()));
  return model;
}

const TensorView* SafetensorsModel::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

StatusOr<const TensorView*> SafetensorsModel::Require(const std::string& name,
                                                       const std::vector<int64_t>& shape) const {
  const TensorView* v = Find(name);
  if (v == nullptr) return NotFoundError("tensor \"" + name + "\" is missing from the model");
  if (v->shape != shape)
    return InvalidArgumentError(v->file + ": tensor \"" + name + "\" has shape " + ShapeToString(v->shape) +
                                ", expected " + ShapeToString(shape));
  return v;
}

std::vector<std::string> SafetensorsModel::Names() const {
  std::vector<std::string> names;
  names.reserve(index_.size());
  for (const auto& [name, view] : index_) names.push_back(name);
  return names;
}

}  // namespace mq

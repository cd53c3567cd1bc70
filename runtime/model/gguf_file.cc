#include "runtime/model/gguf_file.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tokenmill::model {

static_assert(std::endian::native == std::endian::little,
              "GGUF reader assumes a little-endian host");

// Reads little-endian values from [data, data + size), never past the end.
class GgufCursor {
 public:
  GgufCursor(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  template <typename T>
  bool Read(T* out) {
    if (remaining() < sizeof(T)) return false;
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }

  bool Skip(size_t n) {
    if (remaining() < n) return false;
    pos_ += n;
    return true;
  }

  const uint8_t* here() const { return data_ + pos_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

namespace {

// Smallest encoded size of one array item of `type`, to bound counts by the
// bytes left before allocating anything.
size_t MinEncodedSize(GgufType type) {
  switch (type) {
    case GgufType::kU8:
    case GgufType::kI8:
    case GgufType::kBool:
      return 1;
    case GgufType::kU16:
    case GgufType::kI16:
      return 2;
    case GgufType::kU32:
    case GgufType::kI32:
    case GgufType::kF32:
      return 4;
    case GgufType::kString:  // u64 length
    case GgufType::kU64:
    case GgufType::kI64:
    case GgufType::kF64:
      return 8;
    case GgufType::kArray:  // item type + count
      return 12;
  }
  return 1;
}

}  // namespace

std::vector<int64_t> GgufTensorInfo::Shape() const {
  return std::vector<int64_t>(ne.rbegin(), ne.rend());
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::filesystem::path& path) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  return Parse(*std::move(file));
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Parse(std::shared_ptr<const MappedFile> file) {
  std::unique_ptr<GgufFile> gguf(new GgufFile(std::move(file)));
  absl::Status status = gguf->ParseAll();
  if (!status.ok()) return status;
  return gguf;
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = metadata_index_.find(std::string(key));
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::Status GgufFile::ParseAll() {
  const std::string file = path().string();
  GgufCursor cursor(file_->data(), file_->size());
  uint32_t magic = 0;
  if (!cursor.Read(&magic) || magic != kGgufMagic) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": not a GGUF file (no \"GGUF\" magic)"));
  }
  if (!cursor.Read(&version_)) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": GGUF header truncated (version)"));
  }
  if (version_ == 1) {
    return absl::UnimplementedError(
        absl::StrCat(file, ": GGUF version 1 is not supported (versions 2 and 3 are)"));
  }
  if (version_ != 2 && version_ != 3) {
    if ((version_ & 0xffff) == 0 && (version_ >> 24) <= 3) {
      return absl::UnimplementedError(
          absl::StrCat(file, ": big-endian GGUF files are not supported"));
    }
    return absl::UnimplementedError(absl::StrCat(file, ": unsupported GGUF version ", version_,
                                                 " (versions 2 and 3 are supported)"));
  }
  uint64_t tensor_count = 0;
  uint64_t kv_count = 0;
  if (!cursor.Read(&tensor_count) || !cursor.Read(&kv_count)) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": GGUF header truncated (counts)"));
  }
  absl::Status status = ParseMetadata(cursor, kv_count);
  if (!status.ok()) return status;
  status = ParseTensorInfos(cursor, tensor_count);
  if (!status.ok()) return status;
  // The data section starts at the next multiple of the alignment.
  const uint64_t end = cursor.pos();
  data_offset_ = (end + alignment_ - 1) / alignment_ * alignment_;
  return PlaceTensors();
}

namespace {

// Reads one value of `type` (an array item when in_array). `where` names the
// key for messages.
absl::Status ReadValue(GgufCursor& cursor, GgufType type, bool in_array, const std::string& where,
                       GgufValue* out) {
  auto truncated = [&] {
    return absl::InvalidArgumentError(absl::StrCat(where, ": value truncated (", GgufTypeName(type),
                                                   " needs more bytes than the file has)"));
  };
  out->type = type;
  switch (type) {
    case GgufType::kU8: {
      uint8_t v;
      if (!cursor.Read(&v)) return truncated();
      out->u = v;
      return absl::OkStatus();
    }
    case GgufType::kI8: {
      int8_t v;
      if (!cursor.Read(&v)) return truncated();
      out->i = v;
      return absl::OkStatus();
    }
    case GgufType::kU16: {
      uint16_t v;
      if (!cursor.Read(&v)) return truncated();
      out->u = v;
      return absl::OkStatus();
    }
    case GgufType::kI16: {
      int16_t v;
      if (!cursor.Read(&v)) return truncated();
      out->i = v;
      return absl::OkStatus();
    }
    case GgufType::kU32: {
      uint32_t v;
      if (!cursor.Read(&v)) return truncated();
      out->u = v;
      return absl::OkStatus();
    }
    case GgufType::kI32: {
      int32_t v;
      if (!cursor.Read(&v)) return truncated();
      out->i = v;
      return absl::OkStatus();
    }
    case GgufType::kF32: {
      float v;
      if (!cursor.Read(&v)) return truncated();
      out->f = v;
      return absl::OkStatus();
    }
    case GgufType::kBool: {
      uint8_t v;
      if (!cursor.Read(&v)) return truncated();
      if (v > 1) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": bool value ", v, " is not 0 or 1"));
      }
      out->b = v != 0;
      return absl::OkStatus();
    }
    case GgufType::kU64: {
      if (!cursor.Read(&out->u)) return truncated();
      return absl::OkStatus();
    }
    case GgufType::kI64: {
      if (!cursor.Read(&out->i)) return truncated();
      return absl::OkStatus();
    }
    case GgufType::kF64: {
      if (!cursor.Read(&out->f)) return truncated();
      return absl::OkStatus();
    }
    case GgufType::kString: {
      uint64_t length = 0;
      if (!cursor.Read(&length)) return truncated();
      if (length > cursor.remaining()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": string length ", length,
                                                       " exceeds the ", cursor.remaining(),
                                                       " bytes left in the file"));
      }
      out->s.assign(reinterpret_cast<const char*>(cursor.here()), length);
      cursor.Skip(length);
      return absl::OkStatus();
    }
    case GgufType::kArray: {
      if (in_array) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": nested arrays are not supported"));
      }
      uint32_t item_type = 0;
      uint64_t count = 0;
      if (!cursor.Read(&item_type) || !cursor.Read(&count)) return truncated();
      if (item_type >= kGgufTypeCount) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": unknown array item type ", item_type));
      }
      out->item_type = static_cast<GgufType>(item_type);
      if (count > cursor.remaining() / MinEncodedSize(out->item_type)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": array of ", count, " ", GgufTypeName(out->item_type),
                         " items does not fit in the ", cursor.remaining(), " bytes left"));
      }
      GgufValue item;
      for (uint64_t k = 0; k < count; ++k) {
        // `where` names the key; no per-item text (arrays hold 100k+ items).
        absl::Status status = ReadValue(cursor, out->item_type, true, where, &item);
        if (!status.ok()) return status;
        switch (out->item_type) {
          case GgufType::kString:
            if (k == 0) out->strings.reserve(count);
            out->strings.push_back(std::move(item.s));
            break;
          case GgufType::kF32:
          case GgufType::kF64:
            if (k == 0) out->floats.reserve(count);
            out->floats.push_back(item.f);
            break;
          case GgufType::kBool:
            if (k == 0) out->ints.reserve(count);
            out->ints.push_back(item.b ? 1 : 0);
            break;
          case GgufType::kU8:
          case GgufType::kU16:
          case GgufType::kU32:
          case GgufType::kU64:
            if (k == 0) out->ints.reserve(count);
            out->ints.push_back(static_cast<int64_t>(item.u));
            break;
          default:
            if (k == 0) out->ints.reserve(count);
            out->ints.push_back(item.i);
            break;
        }
      }
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": unknown value type ", static_cast<uint32_t>(type)));
}

}  // namespace

absl::Status GgufFile::ParseMetadata(GgufCursor& cursor, uint64_t count) {
  const std::string file = path().string();
  // A key-value pair takes at least a key length, a type and one byte.
  if (count > cursor.remaining() / 13) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": metadata count ", count,
                                                   " does not fit in the ", cursor.remaining(),
                                                   " bytes left"));
  }
  metadata_.reserve(count);
  for (uint64_t k = 0; k < count; ++k) {
    GgufValue key;
    absl::Status status = ReadValue(cursor, GgufType::kString, false,
                                    absl::StrCat(file, ": metadata entry #", k, " key"), &key);
    if (!status.ok()) return status;
    const std::string where = absl::StrCat(file, ": metadata key '", key.s, "'");
    uint32_t type = 0;
    if (!cursor.Read(&type)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": truncated before its type"));
    }
    if (type >= kGgufTypeCount) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown value type ", type));
    }
    GgufValue value;
    status = ReadValue(cursor, static_cast<GgufType>(type), false, where, &value);
    if (!status.ok()) return status;
    if (!metadata_index_.emplace(key.s, metadata_.size()).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": duplicate key"));
    }
    metadata_.emplace_back(std::move(key.s), std::move(value));
  }
  if (const GgufValue* alignment = Find("general.alignment")) {
    const std::optional<int64_t> a = alignment->AsInt();
    if (!a || *a <= 0 || *a > (1 << 20) || (*a & (*a - 1)) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          file, ": metadata key 'general.alignment': ", alignment->AsText().value_or("an array"),
          " is not a power of two between 1 and 1048576"));
    }
    alignment_ = static_cast<uint32_t>(*a);
  }
  return absl::OkStatus();
}

absl::Status GgufFile::ParseTensorInfos(GgufCursor& cursor, uint64_t count) {
  const std::string file = path().string();
  // name length + n_dims + one dim + type + offset.
  if (count > cursor.remaining() / 32) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": tensor count ", count,
                                                   " does not fit in the ", cursor.remaining(),
                                                   " bytes left"));
  }
  tensors_.reserve(count);
  for (uint64_t k = 0; k < count; ++k) {
    GgufValue name;
    absl::Status status = ReadValue(cursor, GgufType::kString, false,
                                    absl::StrCat(file, ": tensor info #", k, " name"), &name);
    if (!status.ok()) return status;
    GgufTensorInfo info;
    info.name = std::move(name.s);
    const std::string where = absl::StrCat(file, ": tensor '", info.name, "'");
    auto invalid = [&](auto&&... what) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", what...));
    };
    uint32_t n_dims = 0;
    if (!cursor.Read(&n_dims)) return invalid("truncated tensor info (n_dims)");
    if (n_dims == 0 || n_dims > 4) return invalid("n_dims ", n_dims, " (must be 1 to 4)");
    info.ne.resize(n_dims);
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      if (!cursor.Read(&info.ne[d])) return invalid("truncated tensor info (ne)");
      if (info.ne[d] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(elements, info.ne[d], &elements) ||
          elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return invalid("element count overflows (ne[", d, "] = ", info.ne[d], ")");
      }
    }
    if (!cursor.Read(&info.ggml_type) || !cursor.Read(&info.offset)) {
      return invalid("truncated tensor info (type, offset)");
    }
    const GgmlTypeInfo type = GgmlType(info.ggml_type);
    if (type.name == nullptr) return invalid("unknown ggml type ", info.ggml_type);
    if (type.block_bytes == 0) {
      return absl::UnimplementedError(
          absl::StrCat(where, ": ggml type ", type.name, " is not supported"));
    }
    if (info.ne[0] % type.block_elements != 0) {
      return invalid("row length ", info.ne[0], " is not a multiple of the ", type.name,
                     " block size ", type.block_elements);
    }
    if (__builtin_mul_overflow(elements / type.block_elements, uint64_t{type.block_bytes},
                               &info.bytes)) {
      return invalid("byte size overflows");
    }
    if (!tensor_index_.emplace(info.name, tensors_.size()).second) {
      return invalid("duplicate tensor name");
    }
    tensors_.push_back(std::move(info));
  }
  return absl::OkStatus();
}

absl::Status GgufFile::PlaceTensors() {
  const std::string file = path().string();
  if (tensors_.empty()) return absl::OkStatus();
  if (data_offset_ > file_->size()) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": data section starts at ", data_offset_,
                                                   ", past the end of the file (", file_->size(),
                                                   " bytes)"));
  }
  const uint64_t data_size = file_->size() - data_offset_;
  for (GgufTensorInfo& info : tensors_) {
    const std::string where = absl::StrCat(file, ": tensor '", info.name, "'");
    if (info.offset % alignment_ != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": offset ", info.offset, " is not a multiple of the alignment ", alignment_));
    }
    if (info.offset > data_size || info.bytes > data_size - info.offset) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": data [", info.offset, ", +", info.bytes,
                       ") runs past the end of the file (data section holds ", data_size,
                       " bytes; truncated file?)"));
    }
    info.data = file_->data() + data_offset_ + info.offset;
  }
  std::vector<const GgufTensorInfo*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const GgufTensorInfo& info : tensors_) by_offset.push_back(&info);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const GgufTensorInfo& prev = *by_offset[k - 1];
    const GgufTensorInfo& next = *by_offset[k];
    if (prev.offset + prev.bytes > next.offset) {
      return absl::InvalidArgumentError(
          absl::StrCat(file, ": tensor '", next.name, "' overlaps tensor '", prev.name, "'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace tokenmill::model

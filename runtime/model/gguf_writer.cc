#include "runtime/model/gguf_writer.h"

#include <cerrno>
#include <cstring>
#include <memory>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "runtime/model/gguf_file.h"

namespace tokenmill::model {
namespace {

template <typename T>
void Put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

void PutString(std::string& out, const std::string& s) {
  Put<uint64_t>(out, s.size());
  out.append(s);
}

void PutScalar(std::string& out, GgufType type, const GgufValue& v) {
  switch (type) {
    case GgufType::kU8:
      Put<uint8_t>(out, static_cast<uint8_t>(v.u));
      break;
    case GgufType::kI8:
      Put<int8_t>(out, static_cast<int8_t>(v.i));
      break;
    case GgufType::kU16:
      Put<uint16_t>(out, static_cast<uint16_t>(v.u));
      break;
    case GgufType::kI16:
      Put<int16_t>(out, static_cast<int16_t>(v.i));
      break;
    case GgufType::kU32:
      Put<uint32_t>(out, static_cast<uint32_t>(v.u));
      break;
    case GgufType::kI32:
      Put<int32_t>(out, static_cast<int32_t>(v.i));
      break;
    case GgufType::kF32:
      Put<float>(out, static_cast<float>(v.f));
      break;
    case GgufType::kBool:
      Put<uint8_t>(out, v.b ? 1 : 0);
      break;
    case GgufType::kString:
      PutString(out, v.s);
      break;
    case GgufType::kU64:
      Put<uint64_t>(out, v.u);
      break;
    case GgufType::kI64:
      Put<int64_t>(out, v.i);
      break;
    case GgufType::kF64:
      Put<double>(out, v.f);
      break;
    case GgufType::kArray:
      break;  // not a scalar
  }
}

void PutValue(std::string& out, const GgufValue& v) {
  Put<uint32_t>(out, static_cast<uint32_t>(v.type));
  if (v.type != GgufType::kArray) {
    PutScalar(out, v.type, v);
    return;
  }
  Put<uint32_t>(out, static_cast<uint32_t>(v.item_type));
  Put<uint64_t>(out, v.array_size());
  GgufValue item;
  for (const std::string& s : v.strings) PutString(out, s);
  for (int64_t x : v.ints) {
    item.u = static_cast<uint64_t>(x);
    item.i = x;
    item.b = x != 0;
    PutScalar(out, v.item_type, item);
  }
  for (double x : v.floats) {
    item.f = x;
    PutScalar(out, v.item_type, item);
  }
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

}  // namespace

absl::Status GgufTensorSink::Append(const void* data, size_t bytes) {
  if (bytes == 0) return absl::OkStatus();
  if (std::fwrite(data, 1, bytes, file_) != bytes) {
    return absl::InternalError(absl::StrCat(path_, ": write failed: ", std::strerror(errno)));
  }
  written_ += bytes;
  return absl::OkStatus();
}

void GgufWriter::AddMetadata(std::string key, GgufValue value) {
  metadata_.emplace_back(std::move(key), std::move(value));
}

void GgufWriter::AddTensor(std::string name, uint32_t ggml_type, std::vector<int64_t> shape) {
  Tensor t;
  t.name = std::move(name);
  t.ggml_type = ggml_type;
  t.shape = std::move(shape);
  const GgmlTypeInfo info = GgmlType(ggml_type);
  uint64_t elements = 1;
  for (int64_t d : t.shape) elements *= static_cast<uint64_t>(d);
  if (info.block_bytes == 0 || t.shape.empty() || t.shape.back() % info.block_elements != 0) {
    bad_type_ = true;
  } else {
    t.bytes = elements / info.block_elements * info.block_bytes;
  }
  t.offset = (data_bytes_ + alignment_ - 1) / alignment_ * alignment_;
  data_bytes_ = t.offset + t.bytes;
  tensors_.push_back(std::move(t));
}

std::string GgufWriter::EncodeHeader() const {
  std::string out;
  Put<uint32_t>(out, kGgufMagic);
  Put<uint32_t>(out, 3);
  Put<uint64_t>(out, tensors_.size());
  Put<uint64_t>(out, metadata_.size());
  for (const auto& [key, value] : metadata_) {
    PutString(out, key);
    PutValue(out, value);
  }
  for (const Tensor& t : tensors_) {
    PutString(out, t.name);
    Put<uint32_t>(out, static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) {
      Put<uint64_t>(out, static_cast<uint64_t>(*it));
    }
    Put<uint32_t>(out, t.ggml_type);
    Put<uint64_t>(out, t.offset);
  }
  return out;
}

absl::Status GgufWriter::Write(const std::filesystem::path& path, const TensorFill& fill) const {
  if (bad_type_) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": a tensor has an unknown type or a bad row length"));
  }
  const std::filesystem::path tmp = path.string() + ".tmp";
  const std::string name = path.string();
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(tmp.c_str(), "wb"));
  if (!file) {
    return absl::InternalError(
        absl::StrCat(tmp.string(), ": cannot create: ", std::strerror(errno)));
  }
  auto fail = [&](absl::Status status) {
    file.reset();
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    return status;
  };
  GgufTensorSink sink(file.get(), name);
  std::string header = EncodeHeader();
  header.resize((header.size() + alignment_ - 1) / alignment_ * alignment_, '\0');
  if (absl::Status s = sink.Append(header.data(), header.size()); !s.ok()) return fail(s);
  const uint64_t data_start = sink.written();
  static constexpr char kZeros[64] = {};
  for (size_t k = 0; k < tensors_.size(); ++k) {
    const Tensor& t = tensors_[k];
    while (sink.written() - data_start < t.offset) {
      const uint64_t pad =
          std::min<uint64_t>(sizeof(kZeros), t.offset - (sink.written() - data_start));
      if (absl::Status s = sink.Append(kZeros, pad); !s.ok()) return fail(s);
    }
    if (absl::Status s = fill(k, sink); !s.ok()) return fail(s);
    if (sink.written() - data_start != t.offset + t.bytes) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat(name, ": tensor '", t.name, "' was given ",
                       sink.written() - data_start - t.offset, " bytes, expected ", t.bytes)));
    }
  }
  if (std::fflush(file.get()) != 0) {
    return fail(absl::InternalError(absl::StrCat(name, ": flush: ", std::strerror(errno))));
  }
  if (std::fclose(file.release()) != 0) {
    return fail(absl::InternalError(absl::StrCat(name, ": close: ", std::strerror(errno))));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return fail(absl::InternalError(absl::StrCat(name, ": rename: ", ec.message())));
  return absl::OkStatus();
}

}  // namespace tokenmill::model

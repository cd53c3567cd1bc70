#include "devices/cuda/core/engine_weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "devices/cuda/core/cuda_call.h"
#include "devices/cuda/core/matmul.h"

namespace tokenmill::devices::cuda::core {
namespace {

// Rows converted per host staging pass when splitting Q8_0 blocks, so an 8B
// model's matrices never need a second host copy of their own size.
constexpr int64_t kQ8StagingRows = 1024;

// Device memory for a matrix of `rows` x `cols` of `type` (Q8_0: quants and
// scales in one allocation, scales after the quants).
GpuStatus AllocateMatrix(DeviceWeights* w, WeightType type, int64_t rows, int64_t cols,
                         const std::string& what, DeviceMatrix* out) {
  const size_t elements = static_cast<size_t>(rows) * static_cast<size_t>(cols);
  DeviceMatrix m;
  m.type = type;
  m.rows = rows;
  m.cols = cols;
  void* p = nullptr;
  if (GpuStatus s = w->Allocate(m.bytes(), what.c_str(), &p); !s.ok()) return s;
  m.data = p;
  if (type == WeightType::kQ8_0) {
    m.scales = reinterpret_cast<const uint16_t*>(static_cast<uint8_t*>(p) + elements);
  }
  w->largest_matrix_elements = std::max(w->largest_matrix_elements, static_cast<int64_t>(elements));
  if (type == WeightType::kQ8_0) w->any_q8_0 = true;
  *out = m;
  return GpuStatus::Ok();
}

// Copies tensor `t` into rows [row_offset, row_offset + t.rows()) of `m`.
GpuStatus CopyRows(const TensorView& t, const DeviceMatrix& m, int64_t row_offset) {
  const int64_t rows = t.rows(), cols = t.cols();
  if (m.type != WeightType::kQ8_0) {
    const size_t row_bytes = static_cast<size_t>(cols) * WeightElementBytes(m.type);
    uint8_t* dst = const_cast<uint8_t*>(static_cast<const uint8_t*>(m.data)) +
                   static_cast<size_t>(row_offset) * row_bytes;
    TM_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(dst, t.data, static_cast<size_t>(rows) * row_bytes, cudaMemcpyHostToDevice));
    return GpuStatus::Ok();
  }
  // GGUF Q8_0 blocks are 34 bytes (f16 scale, 32 int8): split them so the
  // kernels read 16-byte-aligned quants and a separate scale array.
  const int64_t blocks_per_row = cols / kQ8Block;
  std::vector<int8_t> quants(static_cast<size_t>(std::min(rows, kQ8StagingRows) * cols));
  std::vector<uint16_t> scales(
      static_cast<size_t>(std::min(rows, kQ8StagingRows) * blocks_per_row));
  uint8_t* dst_q = const_cast<uint8_t*>(static_cast<const uint8_t*>(m.data));
  uint16_t* dst_s = const_cast<uint16_t*>(m.scales);
  for (int64_t begin = 0; begin < rows; begin += kQ8StagingRows) {
    const int64_t end = std::min(rows, begin + kQ8StagingRows);
    for (int64_t r = begin; r < end; ++r) {
      const uint8_t* src = t.row(r);
      for (int64_t b = 0; b < blocks_per_row; ++b) {
        const uint8_t* block = src + b * 34;
        std::memcpy(&scales[static_cast<size_t>((r - begin) * blocks_per_row + b)], block, 2);
        std::memcpy(&quants[static_cast<size_t>((r - begin) * cols + b * kQ8Block)], block + 2,
                    kQ8Block);
      }
    }
    const size_t n = static_cast<size_t>(end - begin);
    TM_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst_q + static_cast<size_t>(row_offset + begin) * cols,
                                       quants.data(), n * static_cast<size_t>(cols),
                                       cudaMemcpyHostToDevice));
    TM_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(dst_s + static_cast<size_t>(row_offset + begin) * blocks_per_row, scales.data(),
                   n * static_cast<size_t>(blocks_per_row) * 2, cudaMemcpyHostToDevice));
  }
  return GpuStatus::Ok();
}

// Uploads tensors sharing a type and column count as one matrix, their rows
// one after the other.
GpuStatus UploadFused(DeviceWeights* w, std::initializer_list<const TensorView*> parts,
                      const std::string& what, DeviceMatrix* out) {
  const TensorView& first = **parts.begin();
  WeightType type;
  if (!WeightTypeOf(first.type, &type)) {
    return GpuStatus::Error(
        GpuCode::kUnimplemented,
        what + ": weight type " + TensorTypeName(first.type) + " has no CUDA kernel");
  }
  int64_t rows = 0;
  for (const TensorView* t : parts) rows += t->rows();
  if (GpuStatus s = AllocateMatrix(w, type, rows, first.cols(), what, out); !s.ok()) return s;
  int64_t offset = 0;
  for (const TensorView* t : parts) {
    if (GpuStatus s = CopyRows(*t, *out, offset); !s.ok()) return s;
    offset += t->rows();
  }
  w->bytes_per_token += out->bytes();
  return GpuStatus::Ok();
}

GpuStatus UploadVector(DeviceWeights* w, const TensorView& t, const std::string& what,
                       const float** out) {
  if (t.empty()) {
    *out = nullptr;
    return GpuStatus::Ok();
  }
  void* p = nullptr;
  if (GpuStatus s = w->Allocate(t.bytes, what.c_str(), &p); !s.ok()) return s;
  TM_CUDA_RETURN_IF_ERROR(cudaMemcpy(p, t.data, t.bytes, cudaMemcpyHostToDevice));
  w->bytes_per_token += t.bytes;
  *out = static_cast<const float*>(p);
  return GpuStatus::Ok();
}

GpuStatus Unimplemented(const std::string& what) {
  return GpuStatus::Error(GpuCode::kUnimplemented, what);
}

}  // namespace

DeviceWeights::~DeviceWeights() {
  for (void* p : allocations_) cudaFree(p);
}

GpuStatus DeviceWeights::Allocate(size_t bytes, const char* what, void** out) {
  void* p = nullptr;
  const std::string call = "cudaMalloc(" + std::to_string(bytes) + " bytes for " + what + ")";
  if (GpuStatus s = CudaStatus(call.c_str(), cudaMalloc(&p, bytes)); !s.ok()) return s;
  allocations_.push_back(p);
  this->bytes += bytes;
  *out = p;
  return GpuStatus::Ok();
}

bool WeightTypeOf(TensorType type, WeightType* out) {
  switch (type) {
    case TensorType::kF32:
      *out = WeightType::kF32;
      return true;
    case TensorType::kF16:
      *out = WeightType::kF16;
      return true;
    case TensorType::kBF16:
      *out = WeightType::kBF16;
      return true;
    case TensorType::kQ8_0:
      *out = WeightType::kQ8_0;
      return true;
    case TensorType::kQ4_0:
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K:
      return false;
  }
  return false;
}

GpuStatus CheckSpecForCuda(const ModelSpec& spec) {
  if (std::string problem = spec.Problem(); !problem.empty()) {
    return GpuStatus::Error(GpuCode::kInvalidArgument, problem);
  }
  if (spec.arch != Architecture::kLlama && spec.arch != Architecture::kQwen2) {
    return Unimplemented(std::string("architecture ") + ArchitectureName(spec.arch) +
                         " has no CUDA executor yet (llama and qwen2 do); run it on the CPU");
  }
  if (spec.hp.n_experts > 0 || spec.hp.sliding_window > 0) {
    return Unimplemented(std::string("this ") + ArchitectureName(spec.arch) + " model has " +
                         (spec.hp.n_experts > 0 ? "a mixture of experts (Mixtral)"
                                                : "sliding-window attention (Mistral)") +
                         ", which the CUDA executor does not run yet; run it on the CPU");
  }
  if (spec.hp.head_dim > 256 || spec.hp.head_dim % 8 != 0) {
    return Unimplemented("head_dim " + std::to_string(spec.hp.head_dim) +
                         ": the CUDA attention takes head dims that are multiples of 8 up to 256");
  }
  WeightType type;
  std::vector<const TensorView*> matrices = {&spec.token_embedding, &spec.output};
  for (const LayerWeights& l : spec.layers) {
    for (const TensorView* t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      matrices.push_back(t);
    }
    if (l.wk.type != l.wq.type || l.wv.type != l.wq.type || l.w_up.type != l.w_gate.type) {
      return Unimplemented(
          "q/k/v (and gate/up) of one layer must share a weight type: the CUDA executor fuses "
          "them into one matmul");
    }
  }
  for (const TensorView* t : matrices) {
    if (!WeightTypeOf(t->type, &type)) {
      return Unimplemented(t->name + ": weight type " + TensorTypeName(t->type) +
                           " has no CUDA kernel (f32, f16, bf16 and q8_0 do)");
    }
  }
  return GpuStatus::Ok();
}

GpuStatus UploadWeights(const ModelSpec& spec, DeviceWeights* out) {
  const ModelHyperparams& hp = spec.hp;
  DeviceWeights& w = *out;
  if (GpuStatus s = UploadFused(&w, {&spec.token_embedding}, "token embedding", &w.embedding);
      !s.ok()) {
    return s;
  }
  // Decoding reads one embedding row, not the table.
  w.bytes_per_token -= w.embedding.bytes();
  w.bytes_per_token += w.embedding.bytes() / static_cast<uint64_t>(w.embedding.rows);
  const bool tied = spec.tied_embeddings || spec.output.data == spec.token_embedding.data;
  if (tied) {
    w.output = w.embedding;
    w.bytes_per_token += w.output.bytes();
  } else if (GpuStatus s = UploadFused(&w, {&spec.output}, "output", &w.output); !s.ok()) {
    return s;
  }
  if (GpuStatus s = UploadVector(&w, spec.output_norm, "output norm", &w.output_norm); !s.ok()) {
    return s;
  }
  w.layers.resize(static_cast<size_t>(hp.n_layers));
  for (int32_t i = 0; i < hp.n_layers; ++i) {
    const LayerWeights& l = spec.layers[static_cast<size_t>(i)];
    DeviceLayer& d = w.layers[static_cast<size_t>(i)];
    const std::string layer = "layer " + std::to_string(i) + " ";
    struct {
      const TensorView& t;
      const char* name;
      const float** dst;
    } vectors[] = {{l.attn_norm, "attention norm", &d.attn_norm},
                   {l.ffn_norm, "ffn norm", &d.ffn_norm},
                   {l.bq, "q bias", &d.bq},
                   {l.bk, "k bias", &d.bk},
                   {l.bv, "v bias", &d.bv}};
    for (auto& v : vectors) {
      if (GpuStatus s = UploadVector(&w, v.t, layer + v.name, v.dst); !s.ok()) return s;
    }
    if (GpuStatus s = UploadFused(&w, {&l.wq, &l.wk, &l.wv}, layer + "wqkv", &d.wqkv); !s.ok()) {
      return s;
    }
    if (GpuStatus s = UploadFused(&w, {&l.wo}, layer + "wo", &d.wo); !s.ok()) return s;
    if (GpuStatus s = UploadFused(&w, {&l.w_gate, &l.w_up}, layer + "w_gate_up", &d.w_gate_up);
        !s.ok()) {
      return s;
    }
    if (GpuStatus s = UploadFused(&w, {&l.w_down}, layer + "w_down", &d.w_down); !s.ok()) return s;
  }
  return GpuStatus::Ok();
}

GpuStatus SynthesizeWeights(const ModelHyperparams& hp, WeightType type, uint64_t seed,
                            cudaStream_t stream, DeviceWeights* out) {
  DeviceWeights& w = *out;
  const int64_t dim = hp.dim, q_dim = int64_t{hp.n_heads} * hp.head_dim;
  const int64_t kv_dim = int64_t{hp.n_kv_heads} * hp.head_dim, ffn = hp.ffn_dim;
  // Fills a new matrix; amplitude 1/sqrt(cols) keeps activations near unit scale.
  auto matrix = [&](int64_t rows, int64_t cols, const std::string& what,
                    DeviceMatrix* m) -> GpuStatus {
    if (GpuStatus s = AllocateMatrix(&w, type, rows, cols, what, m); !s.ok()) return s;
    LaunchFillSynthetic(type, const_cast<void*>(m->data), const_cast<uint16_t*>(m->scales),
                        rows * cols, 1.0f / std::sqrt(static_cast<float>(cols)), seed++, stream);
    w.bytes_per_token += m->bytes();
    return CudaStatus("LaunchFillSynthetic", cudaGetLastError());
  };
  std::vector<float> ones(static_cast<size_t>(dim), 1.0f);
  auto norm = [&](const std::string& what, const float** dst) -> GpuStatus {
    void* p = nullptr;
    if (GpuStatus s = w.Allocate(ones.size() * 4, what.c_str(), &p); !s.ok()) return s;
    TM_CUDA_RETURN_IF_ERROR(cudaMemcpy(p, ones.data(), ones.size() * 4, cudaMemcpyHostToDevice));
    w.bytes_per_token += ones.size() * 4;
    *dst = static_cast<const float*>(p);
    return GpuStatus::Ok();
  };
  if (GpuStatus s = matrix(hp.vocab_size, dim, "token embedding", &w.embedding); !s.ok()) return s;
  w.bytes_per_token -= w.embedding.bytes();
  w.bytes_per_token += w.embedding.bytes() / static_cast<uint64_t>(w.embedding.rows);
  if (GpuStatus s = matrix(hp.vocab_size, dim, "output", &w.output); !s.ok()) return s;
  if (GpuStatus s = norm("output norm", &w.output_norm); !s.ok()) return s;
  w.layers.resize(static_cast<size_t>(hp.n_layers));
  for (DeviceLayer& d : w.layers) {
    if (GpuStatus s = norm("attention norm", &d.attn_norm); !s.ok()) return s;
    if (GpuStatus s = norm("ffn norm", &d.ffn_norm); !s.ok()) return s;
    if (GpuStatus s = matrix(q_dim + 2 * kv_dim, dim, "wqkv", &d.wqkv); !s.ok()) return s;
    if (GpuStatus s = matrix(dim, q_dim, "wo", &d.wo); !s.ok()) return s;
    if (GpuStatus s = matrix(2 * ffn, dim, "w_gate_up", &d.w_gate_up); !s.ok()) return s;
    if (GpuStatus s = matrix(dim, ffn, "w_down", &d.w_down); !s.ok()) return s;
  }
  TM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return GpuStatus::Ok();
}

}  // namespace tokenmill::devices::cuda::core

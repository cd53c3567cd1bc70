// The model's weights in GPU memory, as the Engine's forward reads them:
// uploaded from a ModelSpec (F32/F16/BF16 copied, Q8_0 split into aligned
// quants and scales, q/k/v and gate/up fused), or synthesized on the device
// for benchmarks. Internal to the core (engine.cc).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "devices/cuda/core/device_matrix.h"
#include "devices/cuda/core/status.h"
#include "devices/model_spec.h"

namespace tokenmill::devices::cuda::core {

struct DeviceLayer {
  const float* attn_norm = nullptr;  // dim
  const float* ffn_norm = nullptr;   // dim
  const float* bq = nullptr;         // q_dim, or null (llama)
  const float* bk = nullptr;         // kv_dim, or null
  const float* bv = nullptr;         // kv_dim, or null
  DeviceMatrix wqkv;                 // rows: q_dim + 2 kv_dim (wq, wk, wv)
  DeviceMatrix wo;                   // dim x q_dim
  DeviceMatrix w_gate_up;            // rows: 2 ffn (w_gate, w_up)
  DeviceMatrix w_down;               // dim x ffn
};

// Owns every device allocation it records; frees them on destruction.
class DeviceWeights {
 public:
  DeviceWeights() = default;
  ~DeviceWeights();
  DeviceWeights(const DeviceWeights&) = delete;
  DeviceWeights& operator=(const DeviceWeights&) = delete;

  // Device memory for `what` (named in the out-of-memory message).
  GpuStatus Allocate(size_t bytes, const char* what, void** out);

  DeviceMatrix embedding;  // vocab x dim
  DeviceMatrix output;     // vocab x dim (the embedding's when tied)
  const float* output_norm = nullptr;
  std::vector<DeviceLayer> layers;
  uint64_t bytes = 0;            // device memory allocated
  uint64_t bytes_per_token = 0;  // read per decoded token (matrices, norms, biases, one row)
  bool any_q8_0 = false;
  int64_t largest_matrix_elements = 0;

 private:
  std::vector<void*> allocations_;
};

// The WeightType of a ModelSpec tensor type; false for types the CUDA
// kernels do not read (Q4_0).
bool WeightTypeOf(TensorType type, WeightType* out);

// Checks that the CUDA engine can run `spec` (types, fusable groups, dims):
// kUnimplemented / kInvalidArgument with the reason.
GpuStatus CheckSpecForCuda(const ModelSpec& spec);

// Uploads every weight of `spec`, which passed CheckSpecForCuda, with
// synchronous copies.
GpuStatus UploadWeights(const ModelSpec& spec, DeviceWeights* out);

// Weights of `hp`'s shape, every matrix of `type`, filled on the device from
// `seed` on `stream` (norm weights 1, no biases; output not tied).
GpuStatus SynthesizeWeights(const ModelHyperparams& hp, WeightType type, uint64_t seed,
                            cudaStream_t stream, DeviceWeights* out);

}  // namespace tokenmill::devices::cuda::core

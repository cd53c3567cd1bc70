// Helpers shared by the GPU tests and the GPU benchmark (test_util.h).
#include "tests/gpu/test_util.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "tests/reference/naive_ops.h"

namespace tokenmill::gpu_test {

GpuProbe ProbeGpu(int device) {
  GpuProbe probe;
  int count = 0;
  if (cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess) {
    cudaGetLastError();
    probe.error = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    return probe;
  }
  if (device >= count) {
    probe.error = count == 0 ? "no CUDA device found"
                             : "GPU " + std::to_string(device) + " of " + std::to_string(count);
    return probe;
  }
  cudaDeviceProp prop{};
  if (cudaError_t e = cudaGetDeviceProperties(&prop, device); e != cudaSuccess) {
    probe.error = std::string("cudaGetDeviceProperties: ") + cudaGetErrorString(e);
    return probe;
  }
  if (cudaError_t e = cudaSetDevice(device); e != cudaSuccess) {
    probe.error = std::string("cudaSetDevice: ") + cudaGetErrorString(e);
    return probe;
  }
  char text[512];
  std::snprintf(text, sizeof(text), "%s, sm_%d%d, %.1f GiB", prop.name, prop.major, prop.minor,
                static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
  probe.ok = true;
  probe.description = text;
  return probe;
}

void DeviceBuffer::Free() {
  if (ptr_ != nullptr) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

cudaError_t DeviceBuffer::Allocate(size_t bytes) {
  Free();
  const cudaError_t e = cudaMalloc(&ptr_, std::max<size_t>(bytes, 1));
  if (e != cudaSuccess) {
    ptr_ = nullptr;
    return e;
  }
  bytes_ = bytes;
  return cudaSuccess;
}

cudaError_t DeviceBuffer::Upload(const void* host, size_t bytes, size_t offset) {
  if (offset + bytes > bytes_) return cudaErrorInvalidValue;
  if (bytes == 0) return cudaSuccess;
  return cudaMemcpy(static_cast<uint8_t*>(ptr_) + offset, host, bytes, cudaMemcpyHostToDevice);
}

cudaError_t DeviceBuffer::Download(void* host, size_t bytes, size_t offset) const {
  if (offset + bytes > bytes_) return cudaErrorInvalidValue;
  if (bytes == 0) return cudaSuccess;
  return cudaMemcpy(host, static_cast<const uint8_t*>(ptr_) + offset, bytes,
                    cudaMemcpyDeviceToHost);
}

cudaError_t DeviceBuffer::Fill(uint8_t byte) {
  if (bytes_ == 0) return cudaSuccess;
  if (cudaError_t e = cudaMemset(ptr_, byte, bytes_); e != cudaSuccess) return e;
  // cudaMemset may return before the fill is done; wait, so that a stream of
  // the engine's (which need not sync with the default stream) sees it.
  return cudaDeviceSynchronize();
}

cudaError_t Finish(cudaStream_t stream) {
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  return cudaStreamSynchronize(stream);
}

CheckResult CheckCuda(cudaError_t error, const char* text) {
  if (error == cudaSuccess) return {};
  return {false, std::string(text) + ": " + cudaGetErrorName(error) + " (" +
                     cudaGetErrorString(error) + ")"};
}

CheckResult CheckOk(const GpuStatus& status, const char* text) {
  if (status.ok()) return {};
  return {false, std::string(text) + ": " + devices::cuda::core::GpuCodeName(status.code) + ": " +
                     status.message};
}

CheckResult CheckCode(const GpuStatus& status, GpuCode expected, const char* text) {
  if (status.code == expected) return {};
  return {false, std::string(text) + ": expected " + devices::cuda::core::GpuCodeName(expected) +
                     ", got " + devices::cuda::core::GpuCodeName(status.code) +
                     (status.message.empty() ? "" : " (" + status.message + ")")};
}

std::vector<float> RandomFloats(size_t n, float amplitude, uint64_t seed) {
  Random random(seed);
  std::vector<float> values(n);
  for (float& v : values) v = random.Uniform(-amplitude, amplitude);
  return values;
}

bool IsPoison(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits == kPoisonF32Bits;
}

double GemvTolerance(WeightType type) {
  switch (type) {
    case WeightType::kF32:
      return kTolF32;
    case WeightType::kF16:
      return kTolF16;
    case WeightType::kBF16:
      return kTolBf16;
    case WeightType::kQ8_0:
      return kTolQ8_0;
  }
  return 0.0;
}

double GemmTolerance(WeightType type) {
  return type == WeightType::kQ8_0 ? kTolBf16 : GemvTolerance(type);
}

Comparison Compare(std::span<const float> gpu, std::span<const double> ref, double floor) {
  Comparison c;
  const size_t n = std::min(gpu.size(), ref.size());
  for (size_t i = 0; i < n; ++i) {
    c.max_ref = std::max(c.max_ref, std::fabs(ref[i]));
    if (!std::isfinite(gpu[i])) {
      if (c.non_finite++ == 0) c.first_non_finite = i;
      continue;
    }
    const double error = std::fabs(static_cast<double>(gpu[i]) - ref[i]);
    if (error > c.max_error) {
      c.max_error = error;
      c.worst = i;
    }
  }
  const double denominator = std::max(c.max_ref, floor);
  c.relative = denominator > 0.0 ? c.max_error / denominator : c.max_error;
  return c;
}

CheckResult CheckClose(std::span<const float> gpu, std::span<const double> ref, double tolerance,
                       double floor) {
  char text[512];
  if (gpu.size() != ref.size()) {
    std::snprintf(text, sizeof(text), "%zu gpu values vs %zu reference values", gpu.size(),
                  ref.size());
    return {false, text};
  }
  const Comparison c = Compare(gpu, ref, floor);
  if (c.non_finite > 0) {
    std::snprintf(text, sizeof(text),
                  "%zu of %zu outputs not finite (unwritten poison?), first at %zu: %g (ref %g)",
                  c.non_finite, gpu.size(), c.first_non_finite,
                  static_cast<double>(gpu[c.first_non_finite]), ref[c.first_non_finite]);
    return {false, text};
  }
  if (!(c.relative <= tolerance)) {
    std::snprintf(text, sizeof(text),
                  "relative error %.3g > %.3g (max |gpu - ref| %.3g at %zu: %.9g vs %.9g; "
                  "max |ref| %.3g, floor %.3g)",
                  c.relative, tolerance, c.max_error, c.worst, static_cast<double>(gpu[c.worst]),
                  ref[c.worst], c.max_ref, floor);
    return {false, text};
  }
  return {};
}

CheckResult CheckClose(std::span<const float> gpu, std::span<const float> ref, double tolerance) {
  const std::vector<double> wide(ref.begin(), ref.end());
  return CheckClose(gpu, wide, tolerance);
}

HostMatrix MakeHostMatrix(WeightType type, int64_t rows, int64_t cols, float amplitude,
                          uint64_t seed) {
  HostMatrix m;
  m.type = type;
  m.rows = rows;
  m.cols = cols;
  const size_t n = static_cast<size_t>(rows) * static_cast<size_t>(cols);
  m.values = RandomFloats(n, amplitude, seed);
  switch (type) {
    case WeightType::kF32:
      m.data.resize(n * 4);
      std::memcpy(m.data.data(), m.values.data(), n * 4);
      break;
    case WeightType::kF16:
    case WeightType::kBF16:
      m.data.resize(n * 2);
      for (size_t i = 0; i < n; ++i) {
        const uint16_t bits = type == WeightType::kF16 ? reference::FloatToHalfNaive(m.values[i])
                                                       : reference::FloatToBf16Naive(m.values[i]);
        std::memcpy(m.data.data() + 2 * i, &bits, 2);
        m.values[i] = type == WeightType::kF16 ? reference::HalfToFloatNaive(bits)
                                               : reference::Bf16ToFloatNaive(bits);
      }
      break;
    case WeightType::kQ8_0: {
      // GGUF blocks (f16 scale + 32 int8) per row, split into the quants and
      // scales arrays the kernels read.
      const int64_t blocks = cols / devices::cuda::core::kQ8Block;
      m.data.resize(n);
      m.scales.resize(static_cast<size_t>(rows * blocks));
      for (int64_t r = 0; r < rows; ++r) {
        float* row = m.values.data() + r * cols;
        const std::vector<uint8_t> gguf = reference::QuantizeQ8_0Naive(row, cols);
        for (int64_t b = 0; b < blocks; ++b) {
          const uint8_t* block = gguf.data() + b * 34;
          uint16_t scale_bits;
          std::memcpy(&scale_bits, block, 2);
          m.scales[static_cast<size_t>(r * blocks + b)] = scale_bits;
          const float scale = reference::HalfToFloatNaive(scale_bits);
          for (int64_t j = 0; j < 32; ++j) {
            const uint8_t q = block[2 + j];
            m.data[static_cast<size_t>(r * cols + b * 32 + j)] = q;
            row[b * 32 + j] = scale * static_cast<float>(static_cast<int8_t>(q));
          }
        }
      }
      break;
    }
  }
  return m;
}

cudaError_t UploadMatrix(const HostMatrix& host, UploadedMatrix* out) {
  if (cudaError_t e = UploadVector(host.data, &out->data); e != cudaSuccess) return e;
  out->matrix = DeviceMatrix{};
  out->matrix.type = host.type;
  out->matrix.rows = host.rows;
  out->matrix.cols = host.cols;
  out->matrix.data = out->data.get();
  if (host.type == WeightType::kQ8_0) {
    if (cudaError_t e = UploadVector(host.scales, &out->scales); e != cudaSuccess) return e;
    out->matrix.scales = out->scales.as<const uint16_t>();
  }
  return cudaSuccess;
}

}  // namespace tokenmill::gpu_test

// Shared helpers of the kernel tests: random inputs, small weight tensors of
// every type, and the ISAs this machine can run.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "devices/cpu/kernels.h"
#include "devices/model_spec.h"

namespace tokenmill::devices::cpu::testing {

inline constexpr float kPoison = std::numeric_limits<float>::quiet_NaN();

// Every ISA up to the best this CPU (and TOKENMILL_CPU_ISA) allows.
inline std::vector<Isa> IsasToTest() {
  std::vector<Isa> isas = {Isa::kScalar};
  if (DetectIsa() >= Isa::kAvx2) isas.push_back(Isa::kAvx2);
  if (DetectIsa() >= Isa::kAvx512) isas.push_back(Isa::kAvx512);
  return isas;
}

inline std::vector<float> RandomFloats(int64_t n, uint32_t seed, float lo = -1.0f,
                                       float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

// A rows x cols weight tensor of `type` made by quantizing random floats; owns
// its bytes (view.data points into them, stable across moves).
struct TestWeights {
  std::vector<uint8_t> bytes;
  TensorView view;
};

inline TestWeights MakeWeights(TensorType type, int64_t rows, int64_t cols, uint32_t seed) {
  TestWeights w;
  const std::vector<float> values = RandomFloats(rows * cols, seed);
  const size_t row_bytes = TensorBytes(type, static_cast<uint64_t>(cols));
  w.bytes.resize(row_bytes * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    QuantizeRow(type, values.data() + r * cols, cols, w.bytes.data() + r * row_bytes);
  }
  w.view.name = "w";
  w.view.type = type;
  w.view.shape = {rows, cols};
  w.view.data = w.bytes.data();
  w.view.bytes = w.bytes.size();
  return w;
}

inline uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline uint16_t LoadU16ForTest(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

}  // namespace tokenmill::devices::cpu::testing

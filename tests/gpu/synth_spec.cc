// Synthetic ModelSpecs for the GPU tests (synth_spec.h).
#include "tests/gpu/synth_spec.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tests/gpu/test_util.h"
#include "tests/reference/naive_ops.h"

namespace tokenmill::gpu_test {
namespace {

using devices::TensorType;
using devices::TensorView;

// Owns every tensor's bytes; ModelSpec::backing keeps it alive.
struct SynthBacking {
  std::vector<std::vector<uint8_t>> buffers;
};

uint64_t NameHash(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Rows of `cols` floats encoded as `type` (GGUF block layout for Q8_0).
void EncodeRow(TensorType type, const float* x, int64_t cols, uint8_t* out) {
  switch (type) {
    case TensorType::kF32:
      std::memcpy(out, x, static_cast<size_t>(cols) * 4);
      return;
    case TensorType::kF16:
    case TensorType::kBF16:
      for (int64_t i = 0; i < cols; ++i) {
        const uint16_t bits = type == TensorType::kF16 ? reference::FloatToHalfNaive(x[i])
                                                       : reference::FloatToBf16Naive(x[i]);
        std::memcpy(out + 2 * i, &bits, 2);
      }
      return;
    case TensorType::kQ8_0: {
      const std::vector<uint8_t> blocks = reference::QuantizeQ8_0Naive(x, cols);
      std::memcpy(out, blocks.data(), blocks.size());
      return;
    }
    case TensorType::kQ4_0:
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K:
      return;  // not a type the CUDA engine runs: left zero
  }
}

// A tensor of `shape` ({cols} or {rows, cols}) whose elements are
// offset + uniform(-amplitude, amplitude), from a stream of its own.
TensorView MakeTensor(SynthBacking& backing, const std::string& name, TensorType type,
                      std::vector<int64_t> shape, float offset, float amplitude, uint64_t seed) {
  TensorView t;
  t.name = name;
  t.type = type;
  t.shape = std::move(shape);
  const int64_t rows = t.rows(), cols = t.cols();
  t.bytes = devices::TensorBytes(type, static_cast<uint64_t>(rows * cols));
  std::vector<uint8_t>& bytes = backing.buffers.emplace_back(t.bytes);
  Random random(seed ^ NameHash(name));
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) v = offset + random.Uniform(-amplitude, amplitude);
    EncodeRow(type, row.data(), cols, bytes.data() + static_cast<size_t>(r) * t.row_bytes());
  }
  t.data = bytes.data();
  return t;
}

}  // namespace

devices::ModelSpec MakeSynthSpec(const SynthSpecOptions& options) {
  const devices::ModelHyperparams& hp = options.hp;
  auto backing = std::make_shared<SynthBacking>();
  devices::ModelSpec spec;
  spec.name = "gpu-test-synth";
  spec.arch = options.arch;
  spec.hp = hp;
  const int64_t dim = hp.dim, q_dim = int64_t{hp.n_heads} * hp.head_dim;
  const int64_t kv_dim = int64_t{hp.n_kv_heads} * hp.head_dim, ffn = hp.ffn_dim;
  const uint64_t seed = options.seed;
  const TensorType type = options.type;
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    return MakeTensor(*backing, name, type, {rows, cols}, 0.0f,
                      1.0f / std::sqrt(static_cast<float>(cols)), seed);
  };
  auto norm = [&](const std::string& name) {
    return MakeTensor(*backing, name, TensorType::kF32, {dim}, 1.0f, 0.1f, seed);
  };
  auto bias = [&](const std::string& name, int64_t n) {
    return MakeTensor(*backing, name, TensorType::kF32, {n}, 0.0f, 0.2f, seed);
  };

  const float output_amplitude = options.output_amplitude / std::sqrt(static_cast<float>(dim));
  // Tied: the embedding is the output matrix, so it takes the output's scale.
  spec.token_embedding = MakeTensor(*backing, "token_embd.weight", type, {hp.vocab_size, dim}, 0.0f,
                                    options.tied_embeddings ? output_amplitude : 1.0f, seed);
  spec.output_norm = norm("output_norm.weight");
  spec.tied_embeddings = options.tied_embeddings;
  spec.output = options.tied_embeddings
                    ? spec.token_embedding
                    : MakeTensor(*backing, "output.weight", type, {hp.vocab_size, dim}, 0.0f,
                                 output_amplitude, seed);
  if (options.rope_freq_factors) {
    spec.rope_freq_factors = MakeTensor(*backing, "rope_freqs.weight", TensorType::kF32,
                                        {hp.head_dim / 2}, 4.5f, 3.5f, seed);
  }
  for (int32_t l = 0; l < hp.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    devices::LayerWeights& w = spec.layers.emplace_back();
    w.attn_norm = norm(p + "attn_norm.weight");
    w.wq = matrix(p + "attn_q.weight", q_dim, dim);
    w.wk = matrix(p + "attn_k.weight", kv_dim, dim);
    w.wv = matrix(p + "attn_v.weight", kv_dim, dim);
    if (options.qkv_bias) {
      w.bq = bias(p + "attn_q.bias", q_dim);
      w.bk = bias(p + "attn_k.bias", kv_dim);
      w.bv = bias(p + "attn_v.bias", kv_dim);
    }
    w.wo = matrix(p + "attn_output.weight", dim, q_dim);
    w.ffn_norm = norm(p + "ffn_norm.weight");
    w.w_gate = matrix(p + "ffn_gate.weight", ffn, dim);
    w.w_up = matrix(p + "ffn_up.weight", ffn, dim);
    w.w_down = matrix(p + "ffn_down.weight", dim, ffn);
  }
  spec.backing = std::move(backing);
  return spec;
}

SynthSpecOptions TinyModelOptions(devices::Architecture arch, devices::TensorType type) {
  SynthSpecOptions o;
  o.arch = arch;
  o.type = type;
  devices::ModelHyperparams& hp = o.hp;
  hp.dim = 128;
  hp.n_layers = 2;
  // llama: 4 heads of 32 over 2 kv heads; qwen2: 2 heads of 64 over 1.
  const bool qwen2 = arch == devices::Architecture::kQwen2;
  hp.n_heads = qwen2 ? 2 : 4;
  hp.n_kv_heads = qwen2 ? 1 : 2;
  hp.head_dim = hp.dim / hp.n_heads;
  hp.ffn_dim = 320;
  hp.vocab_size = 512;
  hp.context_length = 256;
  hp.rms_norm_eps = 1e-5f;
  hp.rope_theta = 10000.0f;
  hp.rope_style = qwen2 ? devices::RopeStyle::kHalves : devices::RopeStyle::kAdjacentPairs;
  o.qkv_bias = qwen2;
  return o;
}

}  // namespace tokenmill::gpu_test

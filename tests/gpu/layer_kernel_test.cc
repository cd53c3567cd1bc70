// The layer kernels (devices/cuda/core/layer_kernels.h) against naive f64
// loops: embedding, residual add + RMSNorm, bias + RoPE + paged KV write,
// paged attention, SiLU-mul and argmax. Outputs are poisoned (0xFF, NaN)
// before each launch; what must not be written (tails, other KV slots, other
// layers) must still hold the poison afterwards.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "devices/cuda/core/layer_kernels.h"
#include "tests/gpu/gpu_test.h"
#include "tests/gpu/test_util.h"
#include "tests/reference/naive_ops.h"

namespace tokenmill::gpu_test {
namespace {

using devices::cuda::core::AttentionScratch;
using devices::cuda::core::KvShape;
using devices::cuda::core::LaunchAddRmsNorm;
using devices::cuda::core::LaunchArgmax;
using devices::cuda::core::LaunchBiasRopeStoreKv;
using devices::cuda::core::LaunchEmbed;
using devices::cuda::core::LaunchPagedAttention;
using devices::cuda::core::LaunchSiluMul;
using devices::cuda::core::LaunchStepTables;
using devices::cuda::core::StepTables;
using devices::cuda::core::StepTokens;
using devices::cuda::core::WeightTypeName;

constexpr size_t kTail = 16;  // poisoned elements after every output
// Paged attention: f32 online softmax against f64 (exp and the running
// rescale round in f32).
constexpr double kTolAttention = 1e-4;
// K written as f16: one f16 rounding (half an ulp, 2^-11 relative).
constexpr double kTolKvF16 = 1e-3;

// got's first expected.size() values equal `expected` exactly (NaN never
// does) and the `tail` values after them are still poison.
CheckResult CheckExact(const std::vector<float>& got, const std::vector<float>& expected,
                       size_t tail) {
  size_t wrong = 0, first = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (!(got[i] == expected[i]) && wrong++ == 0) first = i;
  }
  if (wrong > 0) {
    char text[200];
    std::snprintf(text, sizeof(text), "%zu of %zu values differ, first at %zu: %.9g vs %.9g", wrong,
                  expected.size(), first, static_cast<double>(got[first]),
                  static_cast<double>(expected[first]));
    return {false, text};
  }
  for (size_t i = expected.size(); i < expected.size() + tail; ++i) {
    if (!IsPoison(got[i])) return {false, "the tail after the output was written"};
  }
  return {};
}

// The tail after the first n values is still poison.
CheckResult CheckTail(const std::vector<float>& got, size_t n) {
  for (size_t i = n; i < got.size(); ++i) {
    if (!IsPoison(got[i])) return {false, "the tail after the output was written"};
  }
  return {};
}

// Rows of the embedding, any type, as f32: exact (f16/bf16 widen exactly,
// Q8_0's scale x quant is exact in f32).
GPU_TEST(Embed, EveryTypeExact) {
  CudaStream stream;
  GPU_ASSERT_CUDA(stream.Create());
  constexpr int64_t kVocab = 300, kDim = 256;
  const std::vector<int32_t> ids = {0, 299, 5, 5, 150, 1};
  const size_t n = ids.size() * kDim;
  DeviceBuffer dids, dx;
  GPU_ASSERT_CUDA(UploadVector(ids, &dids));
  GPU_ASSERT_CUDA(dx.Allocate((n + kTail) * 4));
  uint64_t seed = 20;
  for (WeightType type :
       {WeightType::kF32, WeightType::kF16, WeightType::kBF16, WeightType::kQ8_0}) {
    const HostMatrix table = MakeHostMatrix(type, kVocab, kDim, 1.0f, ++seed);
    UploadedMatrix dt;
    GPU_ASSERT_CUDA(UploadMatrix(table, &dt));
    GPU_ASSERT_CUDA(dx.Fill(kPoisonByte));
    LaunchEmbed(dt.matrix, dids.as<int32_t>(), static_cast<int64_t>(ids.size()), dx.as<float>(),
                stream.get());
    GPU_ASSERT_CUDA(Finish(stream.get()));
    std::vector<float> got;
    GPU_ASSERT_CUDA(DownloadVector(dx, n + kTail, &got));
    std::vector<float> expected;
    for (int32_t id : ids) {
      const auto row = table.values.begin() + int64_t{id} * kDim;
      expected.insert(expected.end(), row, row + kDim);
    }
    GPU_EXPECT_CHECK(CheckExact(got, expected, kTail)) << WeightTypeName(type);
  }
}

// x[s] += residual[s]; out[r] = RMSNorm(x[s]) x weight, with and without the
// residual, with a gather (s = gather[r]), and with out == residual. The
// add is exact f32 (x compared bit for bit); the norm within kTolF32Math.
// Dims 32 to 16384 run the register-resident kernel (36: a row of 9 float4s
// over one warp; 16384: 1024 threads of 4 float4s); 30 (not a multiple of 4)
// and 16388 (over 16384) the generic one.
GPU_TEST(AddRmsNorm, ResidualGatherAndAliasing) {
  CudaStream stream;
  GPU_ASSERT_CUDA(stream.Create());
  constexpr int64_t kSources = 7;
  constexpr float kEps = 1e-5f;
  const std::vector<int32_t> gather = {6, 2, 4};
  const float row_scales[kSources] = {1.0f, 0.01f, 100.0f, 2.0f, 0.5f, 30.0f, 1.0f};
  struct Case {
    bool residual, gather, out_is_residual;
  };
  uint64_t seed = 40;
  for (int64_t dim : {30, 32, 36, 64, 2048, 4096, 16384, 16388}) {
    for (Case c : {Case{false, false, false}, Case{true, false, false}, Case{true, false, true},
                   Case{true, true, false}, Case{false, true, false}}) {
      std::vector<float> x = RandomFloats(static_cast<size_t>(kSources * dim), 2.0f, ++seed);
      for (int64_t s = 0; s < kSources; ++s) {
        for (int64_t i = 0; i < dim; ++i) x[static_cast<size_t>(s * dim + i)] *= row_scales[s];
      }
      const std::vector<float> residual =
          RandomFloats(static_cast<size_t>(kSources * dim), 1.0f, ++seed);
      std::vector<float> weight = RandomFloats(static_cast<size_t>(dim), 0.1f, ++seed);
      for (float& w : weight) w += 1.0f;
      const int64_t rows = c.gather ? static_cast<int64_t>(gather.size()) : kSources;

      DeviceBuffer dx, dres, dw, dg, dout;
      GPU_ASSERT_CUDA(UploadVector(x, &dx));
      GPU_ASSERT_CUDA(UploadVector(residual, &dres));
      GPU_ASSERT_CUDA(UploadVector(weight, &dw));
      GPU_ASSERT_CUDA(UploadVector(gather, &dg));
      const size_t out_n = static_cast<size_t>(rows * dim);
      if (!c.out_is_residual) {
        GPU_ASSERT_CUDA(dout.Allocate((out_n + kTail) * 4));
        GPU_ASSERT_CUDA(dout.Fill(kPoisonByte));
      }
      float* out = c.out_is_residual ? dres.as<float>() : dout.as<float>();
      LaunchAddRmsNorm(dx.as<float>(), c.residual ? dres.as<float>() : nullptr, dw.as<float>(),
                       c.gather ? dg.as<int32_t>() : nullptr, rows, dim, kEps, out, stream.get());
      GPU_ASSERT_CUDA(Finish(stream.get()));

      std::vector<float> x_after = x;
      std::vector<double> expected;
      std::vector<float> normed(static_cast<size_t>(dim));
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t s = c.gather ? gather[static_cast<size_t>(r)] : r;
        float* xs = x_after.data() + s * dim;
        if (c.residual) {
          for (int64_t i = 0; i < dim; ++i) xs[i] += residual[static_cast<size_t>(s * dim + i)];
        }
        reference::RmsNormNaive(xs, weight.data(), dim, kEps, normed.data());
        expected.insert(expected.end(), normed.begin(), normed.end());
      }
      std::vector<float> x_got, out_got;
      GPU_ASSERT_CUDA(DownloadVector(dx, x.size(), &x_got));
      const DeviceBuffer& out_buffer = c.out_is_residual ? dres : dout;
      const size_t out_read = c.out_is_residual ? out_n : out_n + kTail;
      GPU_ASSERT_CUDA(DownloadVector(out_buffer, out_read, &out_got));
      const std::string what = "dim " + std::to_string(dim) + (c.residual ? ", residual" : "") +
                               (c.gather ? ", gather" : "") +
                               (c.out_is_residual ? ", out == residual" : "");
      GPU_EXPECT_CHECK(CheckExact(x_got, x_after, 0)) << what << ": x after the add";
      GPU_EXPECT_CHECK(
          CheckClose(std::span<const float>(out_got).first(out_n), expected, kTolF32Math))
          << what;
      GPU_EXPECT_CHECK(CheckTail(out_got, out_n)) << what;
    }
  }
}

// A pool of KV blocks and the block tables of a few sequences, each given
// its blocks in shuffled order, as the kernels see them: block_addr holds
// every sequence's table one after the other.
struct PagedKv {
  KvShape shape;
  int32_t n_layers = 0;
  size_t block_bytes = 0;
  int32_t n_blocks = 0;
  std::vector<std::vector<int32_t>> tables;  // pool block ids of each sequence
  std::vector<int32_t> table_start;          // each sequence's first entry in block_addr
  DeviceBuffer pool;
  std::vector<uint64_t> block_addr;

  size_t ElementBytes() const { return shape.f16 ? 2 : 4; }
  // Byte offset in the pool of element d of (layer, which, head) at
  // position pos of sequence seq.
  size_t Offset(size_t seq, int32_t pos, int32_t layer, int32_t which, int32_t head,
                int32_t d) const {
    const int32_t block = tables[seq][static_cast<size_t>(pos / shape.block_tokens)];
    const int32_t slot = pos % shape.block_tokens;
    return static_cast<size_t>(block) * block_bytes + shape.SlabOffset(layer, which, head) +
           (static_cast<size_t>(slot) * shape.head_dim + static_cast<size_t>(d)) * ElementBytes();
  }
};

// Blocks for sequences whose last positions are `last_pos`, plus `spare`
// blocks nobody uses, shuffled over the pool; the pool is allocated and
// uploaded from `image` later (MakeImage gives an all-poison one).
cudaError_t MakePagedKv(const KvShape& shape, int32_t n_layers,
                        const std::vector<int32_t>& last_pos, int32_t spare, uint64_t seed,
                        PagedKv* kv) {
  kv->shape = shape;
  kv->n_layers = n_layers;
  kv->block_bytes = static_cast<size_t>(n_layers) * 2 * shape.n_kv_heads * shape.block_tokens *
                    shape.head_dim * (shape.f16 ? 2 : 4);
  int32_t needed = 0;
  for (int32_t p : last_pos) needed += p / shape.block_tokens + 1;
  kv->n_blocks = needed + spare;
  std::vector<int32_t> ids(static_cast<size_t>(kv->n_blocks));
  for (int32_t i = 0; i < kv->n_blocks; ++i) ids[static_cast<size_t>(i)] = i;
  Random random(seed);
  random.Shuffle(ids);
  if (cudaError_t e = kv->pool.Allocate(kv->block_bytes * static_cast<size_t>(kv->n_blocks));
      e != cudaSuccess) {
    return e;
  }
  size_t next = 0;
  for (int32_t p : last_pos) {
    kv->table_start.push_back(static_cast<int32_t>(kv->block_addr.size()));
    std::vector<int32_t>& table = kv->tables.emplace_back();
    for (int32_t b = 0; b <= p / shape.block_tokens; ++b) {
      table.push_back(ids[next++]);
      kv->block_addr.push_back(
          kv->pool.address(kv->block_bytes * static_cast<size_t>(table.back())));
    }
  }
  return cudaSuccess;
}

// The device arrays of a step's tokens (ids are not read by these kernels).
struct DeviceStep {
  DeviceBuffer ids, pos, table_start, block_addr;
  StepTokens tokens;
};

cudaError_t UploadStep(const std::vector<int32_t>& pos, const std::vector<int32_t>& table_start,
                       const std::vector<uint64_t>& block_addr, DeviceStep* step) {
  const std::vector<int32_t> ids(pos.size(), 1);
  for (auto [host, buffer] : {std::pair{&ids, &step->ids}, std::pair{&pos, &step->pos},
                              std::pair{&table_start, &step->table_start}}) {
    if (cudaError_t e = UploadVector(*host, buffer); e != cudaSuccess) return e;
  }
  if (cudaError_t e = UploadVector(block_addr, &step->block_addr); e != cudaSuccess) return e;
  step->tokens.ids = step->ids.as<const int32_t>();
  step->tokens.pos = step->pos.as<const int32_t>();
  step->tokens.table_start = step->table_start.as<const int32_t>();
  step->tokens.block_addr = step->block_addr.as<const uint64_t>();
  return cudaSuccess;
}

// Rotates one head (f64) at `pos` as the contract says: pairs (2i, 2i+1) or
// halves (i, i + head_dim/2), angle pos x inv_freq[i] in f64.
void RotateHead(double* v, int32_t head_dim, int32_t pos, const std::vector<float>& inv_freq,
                bool halves) {
  const int32_t half = head_dim / 2;
  for (int32_t i = 0; i < half; ++i) {
    const int32_t a = halves ? i : 2 * i, b = halves ? i + half : 2 * i + 1;
    const double angle = pos * static_cast<double>(inv_freq[static_cast<size_t>(i)]);
    const double c = std::cos(angle), s = std::sin(angle), x0 = v[a], x1 = v[b];
    v[a] = x0 * c - x1 * s;
    v[b] = x0 * s + x1 * c;
  }
}

uint16_t ReadU16(const std::vector<uint8_t>& bytes, size_t offset) {
  uint16_t v;
  std::memcpy(&v, bytes.data() + offset, 2);
  return v;
}

float ReadKv(const std::vector<uint8_t>& bytes, size_t offset, bool f16) {
  if (f16) return reference::HalfToFloatNaive(ReadU16(bytes, offset));
  float v;
  std::memcpy(&v, bytes.data() + offset, 4);
  return v;
}

// Biases, RoPE at each token's position (both styles) and the K/V store into
// the token's block and slot of one layer, for a decode token and a prefill
// chunk crossing a block boundary, KV f16 and f32. q (rewritten in qkv) and
// K within kTolF32Math (K f16: kTolKvF16); V is bias + value, so its bytes
// are exact; every other byte of the pool must still be poison. The step
// tables (LaunchStepTables) start poisoned and are checked entry by entry.
GPU_TEST(BiasRopeStoreKv, EveryStyleAndKvType) {
  CudaStream stream;
  GPU_ASSERT_CUDA(stream.Create());
  struct Case {
    int32_t n_heads, n_kv_heads, head_dim;
    bool halves, biases, f16;
    int32_t block_tokens, n_layers, layer;
  };
  // Sequence 0 decodes at position 37; sequence 1 prefills 13..20.
  const std::vector<int32_t> pos = {37, 13, 14, 15, 16, 17, 18, 19, 20};
  const std::vector<size_t> seq_of = {0, 1, 1, 1, 1, 1, 1, 1, 1};
  uint64_t seed = 60;
  for (const Case& c :
       {Case{8, 2, 64, false, false, true, 16, 2, 1}, Case{4, 4, 128, true, true, true, 8, 3, 2},
        Case{4, 1, 32, false, true, false, 16, 2, 0},
        Case{2, 1, 64, true, false, false, 8, 2, 1}}) {
    const int64_t tokens = static_cast<int64_t>(pos.size());
    const int32_t hd = c.head_dim;
    const int64_t q_dim = int64_t{c.n_heads} * hd, kv_dim = int64_t{c.n_kv_heads} * hd;
    const int64_t stride = q_dim + 2 * kv_dim + 16;
    const KvShape shape{c.block_tokens, c.n_kv_heads, hd, c.f16};
    PagedKv kv;
    GPU_ASSERT_CUDA(MakePagedKv(shape, c.n_layers, {37, 20}, 3, ++seed, &kv));
    GPU_ASSERT_CUDA(kv.pool.Fill(kPoisonByte));
    std::vector<int32_t> table_start;
    for (size_t s : seq_of) table_start.push_back(kv.table_start[s]);
    DeviceStep step;
    GPU_ASSERT_CUDA(UploadStep(pos, table_start, kv.block_addr, &step));

    std::vector<float> qkv(static_cast<size_t>(tokens * stride), kNaN);
    const std::vector<float> values =
        RandomFloats(static_cast<size_t>(tokens * stride), 1.0f, ++seed);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t i = 0; i < q_dim + 2 * kv_dim; ++i) {
        qkv[static_cast<size_t>(t * stride + i)] = values[static_cast<size_t>(t * stride + i)];
      }
    }
    const std::vector<float> bq = RandomFloats(static_cast<size_t>(q_dim), 0.5f, ++seed);
    const std::vector<float> bk = RandomFloats(static_cast<size_t>(kv_dim), 0.5f, ++seed);
    const std::vector<float> bv = RandomFloats(static_cast<size_t>(kv_dim), 0.5f, ++seed);
    devices::ModelHyperparams hp;
    hp.head_dim = hd;
    hp.rope_theta = 10000.0f;
    std::vector<float> inv_freq;
    for (double f : reference::RopeInvFrequenciesNaive(hp, nullptr)) {
      inv_freq.push_back(static_cast<float>(f));
    }
    DeviceBuffer dqkv, dbq, dbk, dbv, dinv;
    GPU_ASSERT_CUDA(UploadVector(qkv, &dqkv));
    GPU_ASSERT_CUDA(UploadVector(bq, &dbq));
    GPU_ASSERT_CUDA(UploadVector(bk, &dbk));
    GPU_ASSERT_CUDA(UploadVector(bv, &dbv));
    GPU_ASSERT_CUDA(UploadVector(inv_freq, &dinv));
    // The step's tables, poisoned first: every entry must be written.
    const size_t half = static_cast<size_t>(hd / 2);
    DeviceBuffer drope, dblocks;
    GPU_ASSERT_CUDA(drope.Allocate(static_cast<size_t>(tokens) * half * 8));
    GPU_ASSERT_CUDA(drope.Fill(kPoisonByte));
    GPU_ASSERT_CUDA(dblocks.Allocate(static_cast<size_t>(tokens) * 8));
    GPU_ASSERT_CUDA(dblocks.Fill(kPoisonByte));
    const StepTables tables{drope.as<float2>(), dblocks.as<uint64_t>()};
    LaunchStepTables(dinv.as<float>(), hd, tokens, shape, step.tokens, tables, stream.get());
    LaunchBiasRopeStoreKv(
        dqkv.as<float>(), stride, tokens, c.n_heads, c.biases ? dbq.as<float>() : nullptr,
        c.biases ? dbk.as<float>() : nullptr, c.biases ? dbv.as<float>() : nullptr, c.halves, shape,
        c.layer, step.tokens, tables, stream.get());
    GPU_ASSERT_CUDA(Finish(stream.get()));
    // The tables: (cos, sin) of the f64 angle rounded to f32 (within half an
    // f32 ulp of the f64 value, plus the f64 functions' error), and each
    // token's block.
    std::vector<float> rope_got;
    std::vector<uint64_t> blocks_got;
    GPU_ASSERT_CUDA(DownloadVector(drope, static_cast<size_t>(tokens) * half * 2, &rope_got));
    GPU_ASSERT_CUDA(DownloadVector(dblocks, static_cast<size_t>(tokens), &blocks_got));
    size_t rope_wrong = 0, blocks_wrong = 0;
    for (int64_t t = 0; t < tokens; ++t) {
      const int32_t p = pos[static_cast<size_t>(t)];
      for (size_t i = 0; i < half; ++i) {
        const double angle = p * static_cast<double>(inv_freq[i]);
        const size_t at = (static_cast<size_t>(t) * half + i) * 2;
        rope_wrong += !(std::abs(rope_got[at] - std::cos(angle)) <= 6e-8) ||
                      !(std::abs(rope_got[at + 1] - std::sin(angle)) <= 6e-8);
      }
      const size_t entry =
          static_cast<size_t>(table_start[static_cast<size_t>(t)] + p / c.block_tokens);
      blocks_wrong += blocks_got[static_cast<size_t>(t)] != kv.block_addr[entry];
    }
    std::vector<float> qkv_got;
    std::vector<uint8_t> pool;
    GPU_ASSERT_CUDA(DownloadVector(dqkv, qkv.size(), &qkv_got));
    GPU_ASSERT_CUDA(DownloadVector(kv.pool, kv.pool.bytes(), &pool));

    std::vector<float> q_got, k_got;
    std::vector<double> q_want, k_want;
    std::vector<bool> written(pool.size(), false);
    size_t v_wrong = 0;
    std::vector<double> head(static_cast<size_t>(hd));
    for (int64_t t = 0; t < tokens; ++t) {
      const int32_t p = pos[static_cast<size_t>(t)];
      const size_t seq = seq_of[static_cast<size_t>(t)];
      for (int32_t h = 0; h < c.n_heads; ++h) {
        for (int32_t d = 0; d < hd; ++d) {
          const size_t i = static_cast<size_t>(h * hd + d);
          float v = qkv[static_cast<size_t>(t * stride) + i];
          if (c.biases) v += bq[i];
          head[static_cast<size_t>(d)] = v;
        }
        RotateHead(head.data(), hd, p, inv_freq, c.halves);
        for (int32_t d = 0; d < hd; ++d) {
          q_want.push_back(head[static_cast<size_t>(d)]);
          q_got.push_back(qkv_got[static_cast<size_t>(t * stride + h * hd + d)]);
        }
      }
      for (int32_t h = 0; h < c.n_kv_heads; ++h) {
        for (int32_t d = 0; d < hd; ++d) {
          const size_t i = static_cast<size_t>(h * hd + d);
          float v = qkv[static_cast<size_t>(t * stride + q_dim) + i];
          if (c.biases) v += bk[i];
          head[static_cast<size_t>(d)] = v;
        }
        RotateHead(head.data(), hd, p, inv_freq, c.halves);
        for (int32_t d = 0; d < hd; ++d) {
          const size_t k_at = kv.Offset(seq, p, c.layer, 0, h, d);
          const size_t v_at = kv.Offset(seq, p, c.layer, 1, h, d);
          k_want.push_back(head[static_cast<size_t>(d)]);
          k_got.push_back(ReadKv(pool, k_at, c.f16));
          const size_t i = static_cast<size_t>(h * hd + d);
          float v = qkv[static_cast<size_t>(t * stride + q_dim + kv_dim) + i];
          if (c.biases) v += bv[i];
          if (c.f16) {
            v_wrong += ReadU16(pool, v_at) != reference::FloatToHalfNaive(v);
          } else {
            v_wrong += std::memcmp(pool.data() + v_at, &v, 4) != 0;
          }
          for (size_t b = 0; b < kv.ElementBytes(); ++b)
            written[k_at + b] = written[v_at + b] = true;
        }
      }
    }
    size_t stray = 0;
    for (size_t i = 0; i < pool.size(); ++i) stray += !written[i] && pool[i] != kPoisonByte;
    const std::string what = "heads " + std::to_string(c.n_heads) + "/" +
                             std::to_string(c.n_kv_heads) + " of " + std::to_string(hd) +
                             (c.halves ? ", halves" : ", pairs") + (c.biases ? ", biases" : "") +
                             (c.f16 ? ", KV f16" : ", KV f32") + ", block_tokens " +
                             std::to_string(c.block_tokens) + ", layer " + std::to_string(c.layer);
    GPU_EXPECT_CHECK(CheckClose(q_got, q_want, kTolF32Math)) << what << ": q";
    GPU_EXPECT_CHECK(CheckClose(k_got, k_want, c.f16 ? kTolKvF16 : kTolF32Math)) << what << ": K";
    GPU_EXPECT_EQ(v_wrong, 0) << what << ": V elements not the exact bytes";
    GPU_EXPECT_EQ(rope_wrong, 0) << what << ": rope table entries off";
    GPU_EXPECT_EQ(blocks_wrong, 0) << what << ": KV store blocks wrong";
    GPU_EXPECT_EQ(stray, 0) << what << ": bytes written outside the tokens' K/V slots";
  }
}

// One paged attention launch and its f64 check: the KV of sequences ending
// at last_pos (random, rounded to the cache's type) in blocks scattered in
// shuffled order, tokens at positions `pos` of sequences `seq_of`, each
// seeing only the positions up to its own. Slots past a sequence's last
// position, the other layer and qkv's k/v part hold NaN, so reading any of
// them fails. scratch_splits > 0 gives the launcher a poisoned split scratch
// of exactly that many splits (force_splits and min_blocks as
// AttentionScratch says) whose tail must stay poison; 0 gives none (the
// single pass). Tolerance kTolAttention.
struct AttentionCase {
  int32_t n_heads, n_kv_heads, head_dim, block_tokens;
  bool f16;
};
struct AttentionTokens {
  std::vector<int32_t> pos;
  std::vector<size_t> seq_of;
  std::vector<int32_t> last_pos;
};

void CheckPagedAttention(const AttentionCase& c, const AttentionTokens& step_tokens,
                         int force_splits, int scratch_splits, int min_blocks, uint64_t seed) {
  CudaStream stream;
  GPU_ASSERT_CUDA(stream.Create());
  constexpr int32_t kLayers = 2, kLayer = 1;
  const std::vector<int32_t>& pos = step_tokens.pos;
  const std::vector<int32_t>& last_pos = step_tokens.last_pos;
  const int32_t hd = c.head_dim;
  const int64_t tokens = static_cast<int64_t>(pos.size());
  const int64_t q_dim = int64_t{c.n_heads} * hd, kv_dim = int64_t{c.n_kv_heads} * hd;
  const int64_t stride = q_dim + 2 * kv_dim + 8;
  const KvShape shape{c.block_tokens, c.n_kv_heads, hd, c.f16};
  PagedKv kv;
  GPU_ASSERT_CUDA(MakePagedKv(shape, kLayers, last_pos, 5, ++seed, &kv));

  // K/V of every valid position, rounded to the cache's type, written into
  // a poisoned image of the pool.
  std::vector<uint8_t> image(kv.pool.bytes(), kPoisonByte);
  // cache[seq][((p * 2 + which) * n_kv_heads + h) * hd + d]
  std::vector<std::vector<float>> cache(last_pos.size());
  for (size_t s = 0; s < last_pos.size(); ++s) {
    const size_t n = static_cast<size_t>(last_pos[s] + 1) * 2 * static_cast<size_t>(kv_dim);
    cache[s] = RandomFloats(n, 1.0f, ++seed);
    for (int32_t p = 0; p <= last_pos[s]; ++p) {
      for (int32_t which = 0; which < 2; ++which) {
        for (int32_t h = 0; h < c.n_kv_heads; ++h) {
          for (int32_t d = 0; d < hd; ++d) {
            float& v = cache[s][static_cast<size_t>(((p * 2 + which) * c.n_kv_heads + h) * hd + d)];
            const size_t at = kv.Offset(s, p, kLayer, which, h, d);
            if (c.f16) {
              const uint16_t bits = reference::FloatToHalfNaive(v);
              v = reference::HalfToFloatNaive(bits);
              std::memcpy(image.data() + at, &bits, 2);
            } else {
              std::memcpy(image.data() + at, &v, 4);
            }
          }
        }
      }
    }
  }
  GPU_ASSERT_CUDA(kv.pool.Upload(image.data(), image.size()));
  std::vector<int32_t> table_start;
  for (size_t s : step_tokens.seq_of) table_start.push_back(kv.table_start[s]);
  DeviceStep step;
  GPU_ASSERT_CUDA(UploadStep(pos, table_start, kv.block_addr, &step));

  std::vector<float> qkv(static_cast<size_t>(tokens * stride), kNaN);
  const std::vector<float> q = RandomFloats(static_cast<size_t>(tokens * q_dim), 2.0f, ++seed);
  for (int64_t t = 0; t < tokens; ++t) {
    std::copy(q.begin() + t * q_dim, q.begin() + (t + 1) * q_dim, qkv.begin() + t * stride);
  }
  const size_t out_n = static_cast<size_t>(tokens * q_dim);
  const size_t partial_n = static_cast<size_t>(scratch_splits) * static_cast<size_t>(tokens) *
                           static_cast<size_t>(c.n_heads) * static_cast<size_t>(hd + 2);
  DeviceBuffer dqkv, dout, dpartials;
  GPU_ASSERT_CUDA(UploadVector(qkv, &dqkv));
  GPU_ASSERT_CUDA(dout.Allocate((out_n + kTail) * 4));
  GPU_ASSERT_CUDA(dout.Fill(kPoisonByte));
  AttentionScratch scratch;
  if (scratch_splits > 0) {
    GPU_ASSERT_CUDA(dpartials.Allocate((partial_n + kTail) * 4));
    GPU_ASSERT_CUDA(dpartials.Fill(kPoisonByte));
    scratch = AttentionScratch{dpartials.as<float>(), partial_n, force_splits, min_blocks};
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  LaunchPagedAttention(dqkv.as<float>(), stride, tokens, c.n_heads, shape, kLayer, step.tokens,
                       scale, dout.as<float>(), stream.get(), scratch);
  GPU_ASSERT_CUDA(Finish(stream.get()));
  std::vector<float> got, partials;
  GPU_ASSERT_CUDA(DownloadVector(dout, out_n + kTail, &got));
  if (scratch_splits > 0) {
    GPU_ASSERT_CUDA(DownloadVector(dpartials, partial_n + kTail, &partials));
  }

  std::vector<double> want;
  const int32_t group = c.n_heads / c.n_kv_heads;
  for (int64_t t = 0; t < tokens; ++t) {
    const size_t s = step_tokens.seq_of[static_cast<size_t>(t)];
    const int32_t last = pos[static_cast<size_t>(t)];
    for (int32_t h = 0; h < c.n_heads; ++h) {
      const float* qh = q.data() + t * q_dim + h * hd;
      const int32_t kvh = h / group;
      auto at = [&](int32_t p, int32_t which) {
        return cache[s].data() + ((p * 2 + which) * c.n_kv_heads + kvh) * hd;
      };
      std::vector<double> scores(static_cast<size_t>(last + 1));
      double max = -INFINITY;
      for (int32_t p = 0; p <= last; ++p) {
        double dot = 0.0;
        for (int32_t d = 0; d < hd; ++d) dot += static_cast<double>(qh[d]) * at(p, 0)[d];
        scores[static_cast<size_t>(p)] = dot * scale;
        max = std::max(max, dot * scale);
      }
      double sum = 0.0;
      for (double& e : scores) sum += (e = std::exp(e - max));
      for (int32_t d = 0; d < hd; ++d) {
        double acc = 0.0;
        for (int32_t p = 0; p <= last; ++p) acc += scores[static_cast<size_t>(p)] * at(p, 1)[d];
        want.push_back(acc / sum);
      }
    }
  }
  const std::string what =
      "heads " + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv_heads) + " of " +
      std::to_string(hd) + ", block_tokens " + std::to_string(c.block_tokens) +
      (c.f16 ? ", KV f16" : ", KV f32") + ", force_splits " + std::to_string(force_splits) +
      ", scratch for " + std::to_string(scratch_splits) + " splits, min_blocks " +
      std::to_string(min_blocks);
  GPU_EXPECT_CHECK(CheckClose(std::span<const float>(got).first(out_n), want, kTolAttention))
      << what;
  GPU_EXPECT_CHECK(CheckTail(got, out_n)) << what;
  if (scratch_splits > 0) GPU_EXPECT_CHECK(CheckTail(partials, partial_n)) << what << ": scratch";
}

// The single pass (no scratch): decodes at positions 0, 16 (a block
// boundary) and 99, and a prefill chunk 20..31. GQA 4:1, 1:1, 6:1 (two
// blocks of 3 query heads), 8:1 (two of 4) and 2:1; head_dim 8 (one lane per
// position, 32 positions per warp load) to 256, 80 and 96 (lanes past
// head_dim / 8 idle); block_tokens 16, 8 and 5 (loads past the block's
// end); KV f16 and f32.
GPU_TEST(PagedAttention, DecodeAndPrefillChunks) {
  // Tokens: three decodes, then the chunk of sequence 3.
  AttentionTokens tokens{{0, 16, 99}, {0, 1, 2}, {0, 16, 99, 31}};
  for (int32_t p = 20; p <= 31; ++p) {
    tokens.pos.push_back(p);
    tokens.seq_of.push_back(3);
  }
  uint64_t seed = 80;
  for (const AttentionCase& c :
       {AttentionCase{8, 2, 128, 16, true}, AttentionCase{4, 4, 64, 8, true},
        AttentionCase{8, 2, 16, 8, false}, AttentionCase{4, 1, 64, 16, false},
        AttentionCase{4, 1, 256, 16, true}, AttentionCase{6, 1, 96, 5, true},
        AttentionCase{8, 1, 80, 16, false}, AttentionCase{2, 1, 8, 16, true},
        AttentionCase{4, 2, 256, 16, false}}) {
    CheckPagedAttention(c, tokens, 0, 0, 0, seed += 10);
  }
}

// Split-K: grids of 2, 3, 7, 16 and 32 splits with one KV block per split
// at least, over decodes with 1, 2, 5, 17 and 300 positions (a token of one
// KV block writes its output directly; fewer blocks than splits leave the
// token fewer splits, and rounding leaves its last ranges empty) and a
// prefill chunk 3..12; 16 with scratch for only 5 (lowered to fit); 32 with
// the launcher's own minimum (64 positions per split: 300 positions at
// block_tokens 8 split 5 ways, the rest write directly); and the launcher's
// own choice of everything. The split scratch starts poisoned.
GPU_TEST(PagedAttention, SplitK) {
  AttentionTokens tokens{{0, 1, 4, 16, 299}, {0, 1, 2, 3, 4}, {0, 1, 4, 16, 299, 12}};
  for (int32_t p = 3; p <= 12; ++p) {
    tokens.pos.push_back(p);
    tokens.seq_of.push_back(5);
  }
  uint64_t seed = 200;
  for (const AttentionCase& c :
       {AttentionCase{8, 2, 128, 16, true}, AttentionCase{4, 4, 16, 8, false},
        AttentionCase{4, 1, 256, 16, true}, AttentionCase{12, 2, 64, 8, true}}) {
    for (int splits : {2, 3, 7, 16, 32}) {
      CheckPagedAttention(c, tokens, splits, splits, 1, seed += 10);
    }
    CheckPagedAttention(c, tokens, 16, 5, 1, seed += 10);
    CheckPagedAttention(c, tokens, 32, 32, 0, seed += 10);
    CheckPagedAttention(c, tokens, 0, 32, 0, seed += 10);
  }
}

// out = silu(gate) x up in f32 against f64, within kTolF32Math.
GPU_TEST(SiluMul, AgainstF64) {
  CudaStream stream;
  GPU_ASSERT_CUDA(stream.Create());
  constexpr int64_t kRows = 3;
  uint64_t seed = 100;
  for (int64_t ffn : {320, 14336}) {
    std::vector<float> gate_up = RandomFloats(static_cast<size_t>(kRows * 2 * ffn), 2.0f, ++seed);
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t i = 0; i < ffn; ++i) gate_up[static_cast<size_t>(r * 2 * ffn + i)] *= 4.0f;
    }
    const size_t out_n = static_cast<size_t>(kRows * ffn);
    DeviceBuffer din, dout;
    GPU_ASSERT_CUDA(UploadVector(gate_up, &din));
    GPU_ASSERT_CUDA(dout.Allocate((out_n + kTail) * 4));
    GPU_ASSERT_CUDA(dout.Fill(kPoisonByte));
    LaunchSiluMul(din.as<float>(), kRows, ffn, dout.as<float>(), stream.get());
    GPU_ASSERT_CUDA(Finish(stream.get()));
    std::vector<float> got;
    GPU_ASSERT_CUDA(DownloadVector(dout, out_n + kTail, &got));
    std::vector<double> want;
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t i = 0; i < ffn; ++i) {
        const double g = gate_up[static_cast<size_t>(r * 2 * ffn + i)];
        const double u = gate_up[static_cast<size_t>(r * 2 * ffn + ffn + i)];
        want.push_back(g / (1.0 + std::exp(-g)) * u);
      }
    }
    GPU_EXPECT_CHECK(CheckClose(std::span<const float>(got).first(out_n), want, kTolF32Math))
        << "ffn " << ffn;
    GPU_EXPECT_CHECK(CheckTail(got, out_n)) << "ffn " << ffn;
  }
}

// Greedy argmax per row: the lowest index on ties (also across the blocks
// of a row, and -0 against +0), NaN never wins unless the whole row is NaN
// (then 0), infinities, and vocabularies of 1, 1000, 128256 (32 blocks per
// row) and 300001 (64 blocks; 4007 and 4008 tie across the first boundary of
// 128256's blocks of 4008). One key scratch serves every launch and
// starts poisoned (0xFF: a key above any real one), so a launch that does
// not clear it gets the wrong answer.
GPU_TEST(Argmax, TiesNaNAndLargeVocab) {
  CudaStream stream;
  GPU_ASSERT_CUDA(stream.Create());
  const float inf = std::numeric_limits<float>::infinity();
  struct Row {
    std::vector<std::pair<int32_t, float>> set;  // (index, value) over a random row
    float fill;  // NaN or an infinity: the whole row holds it; else random values
    int32_t expected;
  };
  struct Case {
    int64_t vocab;
    std::vector<Row> rows;
  };
  const std::vector<Case> cases = {
      {512,
       {{{{300, 20.0f}}, 0.0f, 300},
        {{{7, 20.0f}, {400, 20.0f}}, 0.0f, 7},
        {{{0, kNaN}, {10, kNaN}, {100, 20.0f}, {200, kNaN}}, 0.0f, 100},
        {{}, kNaN, 0},
        {{}, -inf, 0},  // every element tied
        {{{511, -5.0f}}, kNaN, 511},
        {{{50, inf}, {60, inf}}, 0.0f, 50},
        {{{0, 20.0f}, {1, kNaN}, {2, kNaN}}, 0.0f, 0}}},
      {1000, {{{{999, 20.0f}}, 0.0f, 999}, {{{998, 20.0f}, {999, 20.0f}}, 0.0f, 998}}},
      {128256,
       {{{{128255, 20.0f}}, 0.0f, 128255}, {{{77777, 20.0f}, {128000, 20.0f}}, 0.0f, 77777}}},
      {1, {{{}, 0.0f, 0}, {{}, kNaN, 0}}},
      {128256,
       {{{{70000, -0.0f}, {90000, 0.0f}}, -inf, 70000},
        {{{80000, 0.0f}, {100000, -0.0f}}, -inf, 80000},
        {{{0, kNaN}, {5000, kNaN}, {127000, 3.0f}, {128255, kNaN}}, -inf, 127000},
        {{{4007, 1.0f}, {4008, 1.0f}}, -inf, 4007}}},
      {300001, {{{{299999, 20.0f}, {300000, 20.0f}}, 0.0f, 299999}, {{{3, 20.0f}}, 0.0f, 3}}},
  };
  constexpr size_t kMaxRows = 8;
  DeviceBuffer dscratch;
  GPU_ASSERT_CUDA(dscratch.Allocate(kMaxRows * 2 * 8));
  GPU_ASSERT_CUDA(dscratch.Fill(kPoisonByte));
  uint64_t seed = 120;
  for (const Case& c : cases) {
    const int64_t rows = static_cast<int64_t>(c.rows.size());
    std::vector<float> logits;
    std::vector<int32_t> expected;
    for (const Row& row : c.rows) {
      std::vector<float> values = std::isfinite(row.fill)
                                      ? RandomFloats(static_cast<size_t>(c.vocab), 10.0f, ++seed)
                                      : std::vector<float>(static_cast<size_t>(c.vocab), row.fill);
      for (auto [index, value] : row.set) values[static_cast<size_t>(index)] = value;
      logits.insert(logits.end(), values.begin(), values.end());
      expected.push_back(row.expected);
    }
    DeviceBuffer dlogits, dout;
    GPU_ASSERT_CUDA(UploadVector(logits, &dlogits));
    GPU_ASSERT_CUDA(dout.Allocate((static_cast<size_t>(rows) + kTail) * 4));
    GPU_ASSERT_CUDA(dout.Fill(kPoisonByte));
    GPU_ASSERT(static_cast<size_t>(rows) <= kMaxRows);
    LaunchArgmax(dlogits.as<float>(), rows, c.vocab, dout.as<int32_t>(), dscratch.as<uint64_t>(),
                 stream.get());
    GPU_ASSERT_CUDA(Finish(stream.get()));
    std::vector<int32_t> got;
    GPU_ASSERT_CUDA(DownloadVector(dout, static_cast<size_t>(rows) + kTail, &got));
    const std::vector<int32_t> tail(got.begin() + rows, got.end());
    got.resize(static_cast<size_t>(rows));
    GPU_EXPECT_EQ(got, expected) << "vocab " << c.vocab;
    GPU_EXPECT(std::all_of(tail.begin(), tail.end(), [](int32_t v) { return v == -1; }))
        << "vocab " << c.vocab << ": the tail after the output was written";
  }
}

}  // namespace
}  // namespace tokenmill::gpu_test

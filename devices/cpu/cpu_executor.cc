#include "devices/cpu/cpu_executor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "devices/cpu/executor_attention.h"
#include "devices/cpu/executor_spec_check.h"
#include "devices/kv_arena.h"

namespace tokenmill::devices::cpu {
namespace {

// Weight rows per unit of work a thread takes in a matmul: the batched Q8_0
// kernel's tile (kernels_internal.h's kQ8BatchTileRows).
constexpr int64_t kRowGranule = 16;

// Weight types whose matmuls want activations quantized to Q8_0, and which
// of the two scratch buffers (act_q8_0_, act_q4_0_) holds them; -1: none.
// The K-quants share Q8_0's.
int QuantizedBuffer(TensorType type) {
  switch (type) {
    case TensorType::kQ8_0:
    case TensorType::kQ4_K:
    case TensorType::kQ5_K:
    case TensorType::kQ6_K:
      return 0;
    case TensorType::kQ4_0:
      return 1;
    default:
      return -1;
  }
}
constexpr TensorType kQuantized[] = {TensorType::kQ8_0, TensorType::kQ4_0};

StepLimits LimitsFor(const ModelSpec& spec, const ExecutorOptions& options) {
  StepLimits limits;
  limits.block_tokens = options.block_tokens;
  limits.kv_blocks = options.kv_blocks;
  limits.vocab_size = spec.hp.vocab_size;
  limits.context_length = spec.hp.context_length;
  limits.max_batch_tokens = options.max_batch_tokens;
  return limits;
}

// Every matmul weight, for sizing the quantized-activation scratch.
std::vector<const TensorView*> MatMulWeights(const ModelSpec& spec) {
  std::vector<const TensorView*> weights = {&spec.output};
  for (const LayerWeights& l : spec.layers) {
    for (const TensorView* t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down,
                                &l.router, &l.gate_exps, &l.up_exps, &l.down_exps}) {
      if (!t->empty()) weights.push_back(t);
    }
  }
  return weights;
}

// Moves the rows of kArgmax sequences out of out->logits: their greedy tokens
// go to out->argmax, the other rows close up in order.
void SplitArgmaxRows(const Batch& batch, StepOutput* out) {
  const bool any = std::any_of(batch.seqs.begin(), batch.seqs.end(), [](const SequenceStep& s) {
    return s.logits == LogitsWanted::kArgmax;
  });
  if (!any) return;
  const size_t vocab = static_cast<size_t>(out->vocab_size);
  float* logits = out->logits.data();
  size_t row = 0, kept = 0;
  for (const SequenceStep& s : batch.seqs) {
    const size_t rows = LogitsRows(s);
    if (s.logits == LogitsWanted::kArgmax) {
      out->argmax.push_back(GreedyToken({logits + row * vocab, vocab}));
    } else {
      for (size_t r = 0; r < rows; ++r, ++kept) {
        if (kept != row + r) {
          std::memmove(logits + kept * vocab, logits + (row + r) * vocab, vocab * sizeof(float));
        }
      }
    }
    row += rows;
  }
  out->logits.resize(kept * vocab);
}

// gate = GELU(gate) * up with GELU's tanh approximation (Gemma's GeGLU,
// Hugging Face's gelu_pytorch_tanh).
void GeluTanhMul(float* gate, const float* up, int64_t n) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = 0.5f * g * (1.0f + std::tanh(kSqrt2OverPi * (g + 0.044715f * g * g * g))) * up[i];
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<CpuExecutor>> CpuExecutor::Create(const ModelSpec& spec,
                                                                 const ExecutorOptions& options) {
  if (absl::Status s = CheckExecutorOptions(options); !s.ok()) return s;
  if (absl::Status s = CheckModelSpecForCpu(spec); !s.ok()) return s;
  ExecutorOptions checked = options;
  size_t page_bytes = 0;
  if (options.kv_arena != nullptr) {
    page_bytes = options.kv_arena->page_bytes();
    absl::StatusOr<KvPaging> paging = KvPagingFor(
        *options.kv_arena, KvLayoutFor(spec, options.block_tokens, options.kv_type).BlockBytes(),
        options.kv_blocks);
    if (!paging.ok()) return paging.status();
    checked.kv_blocks = paging->kv_blocks;
  }
  std::unique_ptr<CpuExecutor> executor(new CpuExecutor(spec, checked, page_bytes));
  if (absl::Status s = executor->Allocate(); !s.ok()) return s;
  return executor;
}

absl::StatusOr<ExecutorPtr> CreateCpuExecutor(const ModelSpec& spec,
                                              const ExecutorOptions& options) {
  absl::StatusOr<std::unique_ptr<CpuExecutor>> executor = CpuExecutor::Create(spec, options);
  if (!executor.ok()) return executor.status();
  return ExecutorPtr(std::move(*executor));
}

CpuExecutor::CpuExecutor(const ModelSpec& spec, const ExecutorOptions& options,
                         size_t arena_page_bytes)
    : spec_(spec),
      layout_(KvLayoutFor(spec, options.block_tokens, options.kv_type)),
      kv_blocks_(options.kv_blocks),
      arena_(options.kv_arena),
      arena_page_bytes_(arena_page_bytes),
      max_batch_tokens_(options.max_batch_tokens),
      isa_(DetectIsa()),
      pool_(options.threads),
      plan_(LimitsFor(spec, options)) {}

absl::Status CpuExecutor::Allocate() {
  const ModelHyperparams& hp = spec_.hp;
  const size_t rows = static_cast<size_t>(max_batch_tokens_);
  const size_t q_dim = static_cast<size_t>(hp.n_heads) * hp.head_dim;
  const size_t kv_dim = static_cast<size_t>(hp.n_kv_heads) * hp.head_dim;
  pages_.block_bytes = layout_.BlockBytes();
  if (arena_ != nullptr) {
    pages_.blocks_per_page = static_cast<uint32_t>(arena_page_bytes_ / pages_.block_bytes);
    pages_.page_base.assign(kv_blocks_ / pages_.blocks_per_page, nullptr);
    slots_ = KvPageSlots(arena_, static_cast<uint32_t>(pages_.page_base.size()));
  } else {
    size_t kv_bytes = 0;
    if (__builtin_mul_overflow(static_cast<size_t>(kv_blocks_), layout_.BlockBytes(), &kv_bytes)) {
      return absl::ResourceExhaustedError("KV cache size overflows");
    }
    if (!kv_.Allocate(kv_bytes)) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate ", kv_bytes, " bytes for ", kv_blocks_, " KV blocks"));
    }
    // One slot holding every block: the same lookup as an arena's.
    pages_.blocks_per_page = kv_blocks_;
    pages_.page_base.assign(1, kv_.data());
  }

  const int64_t widest =
      std::max({int64_t{hp.dim}, static_cast<int64_t>(q_dim), int64_t{hp.ffn_dim}});
  // With experts, each token's row is gathered once per expert it uses.
  const size_t expert_rows = rows * static_cast<size_t>(std::max(hp.n_experts_used, 1));
  const std::vector<const TensorView*> weights = MatMulWeights(spec_);
  AlignedBuffer* act[] = {&act_q8_0_, &act_q4_0_};
  size_t act_bytes[] = {0, 0};
  for (int i = 0; i < 2; ++i) {
    const bool used = std::any_of(weights.begin(), weights.end(), [&](const TensorView* w) {
      return QuantizedBuffer(w->type) == i;
    });
    if (used) {
      act_bytes[i] =
          ActivationScratchBytes(kQuantized[i], static_cast<int64_t>(expert_rows), widest);
    }
  }
  scores_stride_ = (static_cast<size_t>(layout_.block_tokens) + 15) / 16 * 16;
  const struct {
    AlignedBuffer* buffer;
    size_t bytes;
  } scratch[] = {
      {&x_, rows * hp.dim * sizeof(float)},
      {&h_, rows * hp.dim * sizeof(float)},
      {&q_, rows * q_dim * sizeof(float)},
      {&k_, rows * kv_dim * sizeof(float)},
      {&v_, rows * kv_dim * sizeof(float)},
      {&attn_, rows * q_dim * sizeof(float)},
      {&gate_, expert_rows * hp.ffn_dim * sizeof(float)},
      {&up_, expert_rows * hp.ffn_dim * sizeof(float)},
      {&router_logits_, rows * static_cast<size_t>(hp.n_experts) * sizeof(float)},
      {&moe_x_, hp.n_experts > 0 ? expert_rows * hp.dim * sizeof(float) : 0},
      {&moe_out_, hp.n_experts > 0 ? expert_rows * hp.dim * sizeof(float) : 0},
      {act[0], act_bytes[0]},
      {act[1], act_bytes[1]},
      {&scores_, static_cast<size_t>(pool_.threads()) * scores_stride_ * sizeof(float)},
      {&inv_freq_, static_cast<size_t>(hp.head_dim / 2) * sizeof(float)},
      {&inv_freq_local_, static_cast<size_t>(hp.head_dim / 2) * sizeof(float)},
  };
  for (const auto& s : scratch) {
    if (!s.buffer->Allocate(s.bytes)) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot allocate ", s.bytes, " bytes of executor scratch"));
    }
  }
  const size_t n_experts = static_cast<size_t>(hp.n_experts);
  group_acts_.resize(std::max<size_t>(4, 2 * n_experts));
  expert_tasks_.reserve(2 * n_experts);
  if (n_experts > 0) {
    expert_views_.reserve(spec_.layers.size() * n_experts);
    for (const LayerWeights& l : spec_.layers) {
      for (size_t e = 0; e < n_experts; ++e) {
        const auto i = static_cast<int64_t>(e);
        expert_views_.push_back(
            {ExpertSlice(l.gate_exps, i), ExpertSlice(l.up_exps, i), ExpertSlice(l.down_exps, i)});
      }
    }
    expert_offset_.resize(n_experts + 1);
    expert_fill_.resize(n_experts);
    token_expert_.resize(expert_rows);
    token_weight_.resize(expert_rows);
    slot_token_.resize(expert_rows);
    token_slot_.resize(expert_rows);
  }
  const float* freq_factors = spec_.rope_freq_factors.empty()
                                  ? nullptr
                                  : static_cast<const float*>(spec_.rope_freq_factors.data);
  RopeInvFrequencies(hp, freq_factors, inv_freq_.as<float>());
  if (hp.sliding_window > 0) {
    RopeInvFrequencies(hp, freq_factors, inv_freq_local_.as<float>(), /*local=*/true);
  }
  return absl::OkStatus();
}

void CpuExecutor::PoisonScratchForTesting() {
  // All-ones bytes are NaN as f32 and as f16 (and as a Q8_0 block's scale).
  for (AlignedBuffer* b : {&x_, &h_, &q_, &k_, &v_, &attn_, &gate_, &up_, &act_q8_0_, &act_q4_0_,
                           &scores_, &router_logits_, &moe_x_, &moe_out_}) {
    if (b->bytes() > 0) std::memset(b->data(), 0xFF, b->bytes());
  }
}

void CpuExecutor::PoisonKvForTesting() {
  if (arena_ == nullptr) {
    if (kv_.bytes() > 0) std::memset(kv_.data(), 0xFF, kv_.bytes());
    return;
  }
  for (uint8_t* page : pages_.page_base) {
    if (page != nullptr) std::memset(page, 0xFF, pages_.blocks_per_page * pages_.block_bytes);
  }
}

absl::Status CpuExecutor::MapKvPage(uint32_t slot, uint32_t arena_page) {
  absl::StatusOr<void*> address = slots_.Map(slot, arena_page);
  if (!address.ok()) return address.status();
  pages_.page_base[slot] = static_cast<uint8_t*>(*address);
  return absl::OkStatus();
}

absl::Status CpuExecutor::UnmapKvPage(uint32_t slot) {
  if (absl::Status s = slots_.Unmap(slot); !s.ok()) return s;
  pages_.page_base[slot] = nullptr;
  return absl::OkStatus();
}

void CpuExecutor::PrepareRows(std::span<const TensorView* const> consumers, const float* x,
                              int64_t x_cols, int64_t begin, int64_t end) {
  AlignedBuffer* act[] = {&act_q8_0_, &act_q4_0_};
  for (int i = 0; i < 2; ++i) {
    // The parts of a row that the weights reading this buffer need: a Q8_0
    // model's inputs get no Q8_K part, a K-quant model's no Q8_0 part.
    uint32_t formats = 0;
    for (const TensorView* w : consumers) {
      if (QuantizedBuffer(w->type) == i) formats |= ActivationFormats(w->type);
    }
    if (formats != 0) PrepareActivationRows(isa_, formats, x, x_cols, begin, end, act[i]->data());
  }
}

void CpuExecutor::MatMulGroup(std::span<const MatMulTask> tasks, int64_t rows) {
  // group_acts_ holds one entry per task: at least 4 (q, k, v), 2 per expert.
  const size_t n_tasks = std::min(tasks.size(), group_acts_.size());
  Activations* acts = group_acts_.data();
  int64_t total = 0;
  for (size_t i = 0; i < n_tasks; ++i) {
    const TensorView& w = *tasks[i].w;
    const int buffer = QuantizedBuffer(w.type);
    const uint8_t* scratch = buffer == 0   ? act_q8_0_.data()
                             : buffer == 1 ? act_q4_0_.data()
                                           : nullptr;
    if (scratch != nullptr) {
      scratch +=
          static_cast<size_t>(tasks[i].first_row) * ActivationScratchBytes(w.type, 1, w.cols());
    }
    const int64_t task_rows = tasks[i].rows > 0 ? tasks[i].rows : rows;
    acts[i] = BindActivations(w.type, tasks[i].x, task_rows, w.cols(), scratch);
    total += (w.rows() + kRowGranule - 1) / kRowGranule;
  }
  // Threads split whole granules of each matrix, so which kernel tile an
  // output row falls in (and so its rounding) never depends on the thread
  // count.
  pool_.ParallelFor(total, [&](int64_t begin, int64_t end, int32_t) {
    int64_t offset = 0;
    for (size_t i = 0; i < n_tasks; ++i) {
      const int64_t n = tasks[i].w->rows();
      const int64_t granules = (n + kRowGranule - 1) / kRowGranule;
      if (offset >= end) break;
      const int64_t b = (std::max(begin, offset) - offset) * kRowGranule;
      const int64_t e = std::min((std::min(end, offset + granules) - offset) * kRowGranule, n);
      if (b < e) MatMulRows(isa_, *tasks[i].w, b, e, acts[i], tasks[i].y, tasks[i].y_stride);
      offset += granules;
    }
  });
}

void CpuExecutor::Embed(int64_t tokens) {
  const int64_t dim = spec_.hp.dim;
  float* x = x_.as<float>();
  // Gemma scales the embedding by sqrt(dim) (in f32, as llama.cpp does).
  const bool scaled = spec_.arch == Architecture::kGemma3;
  const float scale = std::sqrt(static_cast<float>(dim));
  pool_.ParallelFor(tokens, [&](int64_t begin, int64_t end, int32_t) {
    for (int64_t t = begin; t < end; ++t) {
      float* row = x + t * dim;
      DequantizeRow(spec_.token_embedding, plan_.token(t), row);
      if (scaled) {
        for (int64_t i = 0; i < dim; ++i) row[i] *= scale;
      }
    }
  });
}

void CpuExecutor::RunLayer(int32_t layer, int64_t tokens) {
  const ModelHyperparams& hp = spec_.hp;
  const LayerWeights& w = spec_.layers[static_cast<size_t>(layer)];
  const int64_t dim = hp.dim, hd = hp.head_dim, heads = hp.n_heads;
  const int64_t q_dim = heads * hd, kv_dim = int64_t{hp.n_kv_heads} * hd, ffn = hp.ffn_dim;
  float *x = x_.as<float>(), *h = h_.as<float>(), *q = q_.as<float>(), *k = k_.as<float>();
  float *v = v_.as<float>(), *attn = attn_.as<float>(), *gate = gate_.as<float>();
  float* up = up_.as<float>();

  // Residual of the previous layer's FFN (left in h), then attention norm.
  const TensorView* const qkv[] = {&w.wq, &w.wk, &w.wv};
  const float* attn_norm = static_cast<const float*>(w.attn_norm.data);
  pool_.ParallelFor(tokens, [&](int64_t begin, int64_t end, int32_t) {
    for (int64_t t = begin; t < end; ++t) {
      if (layer > 0) Add(isa_, x + t * dim, h + t * dim, dim);
      RmsNorm(isa_, x + t * dim, attn_norm, dim, hp.rms_norm_eps, h + t * dim);
    }
    PrepareRows(qkv, h, dim, begin, end);
  });
  const MatMulTask qkv_tasks[] = {
      {&w.wq, h, q, q_dim}, {&w.wk, h, k, kv_dim}, {&w.wv, h, v, kv_dim}};
  MatMulGroup(qkv_tasks, tokens);

  // Biases, per-head q/k norms, RoPE at each token's own position, K/V into
  // the paged cache: one pass over each token's q/k/v while they are in cache.
  const int32_t window = LayerWindow(hp, layer);
  const float* inv_freq = window > 0 ? inv_freq_local_.as<float>() : inv_freq_.as<float>();
  const float* q_norm = static_cast<const float*>(w.q_norm.data);
  const float* k_norm = static_cast<const float*>(w.k_norm.data);
  pool_.ParallelFor(tokens, [&](int64_t begin, int64_t end, int32_t) {
    for (int64_t t = begin; t < end; ++t) {
      float *qt = q + t * q_dim, *kt = k + t * kv_dim, *vt = v + t * kv_dim;
      if (!w.bq.empty()) Add(isa_, qt, static_cast<const float*>(w.bq.data), q_dim);
      if (!w.bk.empty()) Add(isa_, kt, static_cast<const float*>(w.bk.data), kv_dim);
      if (!w.bv.empty()) Add(isa_, vt, static_cast<const float*>(w.bv.data), kv_dim);
      if (q_norm != nullptr) {
        for (int64_t i = 0; i < q_dim; i += hd)
          RmsNorm(isa_, qt + i, q_norm, hd, hp.rms_norm_eps, qt + i);
      }
      if (k_norm != nullptr) {
        for (int64_t i = 0; i < kv_dim; i += hd)
          RmsNorm(isa_, kt + i, k_norm, hd, hp.rms_norm_eps, kt + i);
      }
      const int32_t pos = plan_.position(t);
      Rope(qt, hp.n_heads, hp.head_dim, pos, inv_freq, hp.rope_style);
      Rope(kt, hp.n_kv_heads, hp.head_dim, pos, inv_freq, hp.rope_style);
      const PagedKv kv{&layout_, plan_.block_addresses(t)};
      WriteTokenKv(isa_, kv, layer, pos, kt, vt);
    }
  });

  // Attention, one (token, query head) pair per item.
  const int64_t group = heads / hp.n_kv_heads;
  const float scale = AttentionScale(hp);
  float* scores = scores_.as<float>();
  pool_.ParallelFor(tokens * heads, [&](int64_t begin, int64_t end, int32_t thread) {
    float* thread_scores = scores + static_cast<size_t>(thread) * scores_stride_;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t t = i / heads, head = i % heads;
      const PagedKv kv{&layout_, plan_.block_addresses(t)};
      AttendHead(isa_, kv, layer, static_cast<int32_t>(head / group), plan_.position(t), window,
                 q + t * q_dim + head * hd, scale, thread_scores, attn + t * q_dim + head * hd);
    }
  });

  // Output projection into h, (gemma3) its norm, residual, FFN norm.
  const TensorView* const wo[] = {&w.wo};
  pool_.ParallelFor(tokens, [&](int64_t begin, int64_t end, int32_t) {
    PrepareRows(wo, attn, q_dim, begin, end);
  });
  const MatMulTask wo_task[] = {{&w.wo, attn, h, dim}};
  MatMulGroup(wo_task, tokens);
  const TensorView* const gate_up[] = {&w.w_gate, &w.w_up};
  const TensorView* const router[] = {&w.router};
  const float* ffn_norm = static_cast<const float*>(w.ffn_norm.data);
  const float* attn_post_norm = static_cast<const float*>(w.attn_post_norm.data);
  pool_.ParallelFor(tokens, [&](int64_t begin, int64_t end, int32_t) {
    for (int64_t t = begin; t < end; ++t) {
      if (attn_post_norm != nullptr) {
        RmsNorm(isa_, h + t * dim, attn_post_norm, dim, hp.rms_norm_eps, h + t * dim);
      }
      Add(isa_, x + t * dim, h + t * dim, dim);
      RmsNorm(isa_, x + t * dim, ffn_norm, dim, hp.rms_norm_eps, h + t * dim);
    }
    // With experts, the router reads these rows first.
    if (hp.n_experts == 0) {
      PrepareRows(gate_up, h, dim, begin, end);
    } else {
      PrepareRows(router, h, dim, begin, end);
    }
  });

  if (hp.n_experts > 0) {
    RunExperts(layer, tokens);
    return;
  }
  // SwiGLU (gemma3: GeGLU) FFN; its output stays in h until the next layer
  // (or the logits) adds it to x.
  const MatMulTask gate_up_tasks[] = {{&w.w_gate, h, gate, ffn}, {&w.w_up, h, up, ffn}};
  MatMulGroup(gate_up_tasks, tokens);
  const TensorView* const down[] = {&w.w_down};
  const bool gelu = spec_.arch == Architecture::kGemma3;
  pool_.ParallelFor(tokens, [&](int64_t begin, int64_t end, int32_t) {
    for (int64_t t = begin; t < end; ++t) {
      if (gelu) {
        GeluTanhMul(gate + t * ffn, up + t * ffn, ffn);
      } else {
        SiluMul(isa_, gate + t * ffn, up + t * ffn, ffn);
      }
    }
    PrepareRows(down, gate, ffn, begin, end);
  });
  const MatMulTask down_task[] = {{&w.w_down, gate, h, dim}};
  MatMulGroup(down_task, tokens);
  if (const float* ffn_post_norm = static_cast<const float*>(w.ffn_post_norm.data)) {
    pool_.ParallelFor(tokens, [&](int64_t begin, int64_t end, int32_t) {
      for (int64_t t = begin; t < end; ++t) {
        RmsNorm(isa_, h + t * dim, ffn_post_norm, dim, hp.rms_norm_eps, h + t * dim);
      }
    });
  }
}

void CpuExecutor::RouteTokens(int64_t tokens) {
  const ModelHyperparams& hp = spec_.hp;
  const int64_t n_exp = hp.n_experts, k = hp.n_experts_used;
  const float* logits = router_logits_.as<float>();
  // Softmax over all experts, the k most probable (the lower index first on
  // ties), their probabilities renormalised to sum 1 when the model says so.
  auto route = [&](int64_t begin, int64_t end, int32_t) {
    for (int64_t t = begin; t < end; ++t) {
      const float* l = logits + t * n_exp;
      const float max = *std::max_element(l, l + n_exp);
      double sum = 0.0;
      for (int64_t e = 0; e < n_exp; ++e) sum += std::exp(static_cast<double>(l[e] - max));
      int32_t* chosen = token_expert_.data() + t * k;
      float* weight = token_weight_.data() + t * k;
      double chosen_sum = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        int64_t best = -1;
        for (int64_t e = 0; e < n_exp; ++e) {
          if (std::find(chosen, chosen + j, static_cast<int32_t>(e)) != chosen + j) continue;
          if (best < 0 || l[e] > l[best]) best = e;
        }
        chosen[j] = static_cast<int32_t>(best);
        const double p = std::exp(static_cast<double>(l[best] - max)) / sum;
        weight[j] = static_cast<float>(p);
        chosen_sum += p;
      }
      if (hp.expert_weights_norm) {
        for (int64_t j = 0; j < k; ++j) weight[j] = static_cast<float>(weight[j] / chosen_sum);
      }
    }
  };
  // A decode step's few tokens route faster here than the pool wakes up.
  if (tokens < 8) {
    route(0, tokens, 0);
  } else {
    pool_.ParallelFor(tokens, route);
  }
  // Gathered rows grouped by expert, tokens in order within each expert.
  std::fill(expert_fill_.begin(), expert_fill_.end(), 0);
  for (int64_t i = 0; i < tokens * k; ++i) ++expert_fill_[static_cast<size_t>(token_expert_[i])];
  expert_offset_[0] = 0;
  for (int64_t e = 0; e < n_exp; ++e) {
    expert_offset_[static_cast<size_t>(e + 1)] =
        expert_offset_[static_cast<size_t>(e)] + expert_fill_[static_cast<size_t>(e)];
    expert_fill_[static_cast<size_t>(e)] = 0;
  }
  for (int64_t i = 0; i < tokens * k; ++i) {
    const auto e = static_cast<size_t>(token_expert_[i]);
    const int64_t slot = expert_offset_[e] + expert_fill_[e]++;
    slot_token_[static_cast<size_t>(slot)] = i / k;
    token_slot_[static_cast<size_t>(i)] = slot;
  }
}

void CpuExecutor::RunExperts(int32_t layer, int64_t tokens) {
  const ModelHyperparams& hp = spec_.hp;
  const LayerWeights& w = spec_.layers[static_cast<size_t>(layer)];
  const int64_t dim = hp.dim, ffn = hp.ffn_dim, n_exp = hp.n_experts, k = hp.n_experts_used;
  float *h = h_.as<float>(), *gate = gate_.as<float>(), *up = up_.as<float>();
  float *moe_x = moe_x_.as<float>(), *moe_out = moe_out_.as<float>();

  // RunLayer prepared h's rows for the router.
  const MatMulTask router_task[] = {{&w.router, h, router_logits_.as<float>(), n_exp}};
  MatMulGroup(router_task, tokens);
  RouteTokens(tokens);

  // Each token's normed row copied to its place in every chosen expert's
  // rows, then quantized once for all experts (one weight type per stack).
  const int64_t slots = tokens * k;
  const ExpertViews* views = expert_views_.data() + static_cast<size_t>(layer) * n_exp;
  const TensorView* const gate_up[] = {&w.gate_exps, &w.up_exps};
  pool_.ParallelFor(slots, [&](int64_t begin, int64_t end, int32_t) {
    for (int64_t s = begin; s < end; ++s) {
      std::memcpy(moe_x + s * dim, h + slot_token_[static_cast<size_t>(s)] * dim,
                  static_cast<size_t>(dim) * sizeof(float));
    }
    PrepareRows(gate_up, moe_x, dim, begin, end);
  });
  // Every used expert's gate and up projections in one parallel loop: each
  // expert's weights are read once for all of its rows.
  expert_tasks_.clear();
  for (int64_t e = 0; e < n_exp; ++e) {
    const int64_t first = expert_offset_[static_cast<size_t>(e)];
    const int64_t rows = expert_offset_[static_cast<size_t>(e + 1)] - first;
    if (rows == 0) continue;
    const ExpertViews& v = views[e];
    ++expert_runs_;
    expert_tasks_.push_back({&v.gate, moe_x + first * dim, gate + first * ffn, ffn, rows, first});
    expert_tasks_.push_back({&v.up, moe_x + first * dim, up + first * ffn, ffn, rows, first});
  }
  MatMulGroup(expert_tasks_, slots);
  const TensorView* const down[] = {&w.down_exps};
  pool_.ParallelFor(slots, [&](int64_t begin, int64_t end, int32_t) {
    for (int64_t s = begin; s < end; ++s) SiluMul(isa_, gate + s * ffn, up + s * ffn, ffn);
    PrepareRows(down, gate, ffn, begin, end);
  });
  expert_tasks_.clear();
  for (int64_t e = 0; e < n_exp; ++e) {
    const int64_t first = expert_offset_[static_cast<size_t>(e)];
    const int64_t rows = expert_offset_[static_cast<size_t>(e + 1)] - first;
    if (rows == 0) continue;
    expert_tasks_.push_back(
        {&views[e].down, gate + first * ffn, moe_out + first * dim, dim, rows, first});
  }
  MatMulGroup(expert_tasks_, slots);
  // Weighted sum of each token's experts into h, in rank order.
  pool_.ParallelFor(tokens, [&](int64_t begin, int64_t end, int32_t) {
    for (int64_t t = begin; t < end; ++t) {
      float* out = h + t * dim;
      std::fill(out, out + dim, 0.0f);
      for (int64_t j = 0; j < k; ++j) {
        const float wj = token_weight_[static_cast<size_t>(t * k + j)];
        const float* y = moe_out + token_slot_[static_cast<size_t>(t * k + j)] * dim;
        for (int64_t i = 0; i < dim; ++i) out[i] += wj * y[i];
      }
    }
  });
}

void CpuExecutor::ComputeLogits(float* logits) {
  const ModelHyperparams& hp = spec_.hp;
  const int64_t dim = hp.dim, rows = plan_.logits_rows();
  float *x = x_.as<float>(), *h = h_.as<float>();
  // Final residual for the wanted tokens only, then their norm packed into
  // rows 0..rows-1 of h. Two loops: packing while adding would overwrite rows
  // of h that another thread has yet to add.
  pool_.ParallelFor(rows, [&](int64_t begin, int64_t end, int32_t) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t t = plan_.logits_token(r);
      Add(isa_, x + t * dim, h + t * dim, dim);
    }
  });
  const float* output_norm = static_cast<const float*>(spec_.output_norm.data);
  const TensorView* const output[] = {&spec_.output};
  pool_.ParallelFor(rows, [&](int64_t begin, int64_t end, int32_t) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t t = plan_.logits_token(r);
      RmsNorm(isa_, x + t * dim, output_norm, dim, hp.rms_norm_eps, h + r * dim);
    }
    PrepareRows(output, h, dim, begin, end);
  });
  const MatMulTask output_task[] = {{&spec_.output, h, logits, hp.vocab_size}};
  MatMulGroup(output_task, rows);
}

absl::StatusOr<StepOutput> CpuExecutor::Forward(const Batch& batch) {
  const auto start = std::chrono::steady_clock::now();
  if (absl::Status s = plan_.Build(batch, pages_); !s.ok()) return s;
  const int64_t tokens = plan_.tokens();
  StepOutput out;
  out.vocab_size = spec_.hp.vocab_size;
  // NaN, so that a row the step failed to write cannot pass for logits.
  out.logits.assign(static_cast<size_t>(plan_.logits_rows()) * out.vocab_size,
                    std::numeric_limits<float>::quiet_NaN());
  if (tokens > 0) {
    Embed(tokens);
    for (int32_t layer = 0; layer < spec_.hp.n_layers; ++layer) RunLayer(layer, tokens);
    if (plan_.logits_rows() > 0) ComputeLogits(out.logits.data());
  }
  SplitArgmaxRows(batch, &out);
  out.device_time = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::steady_clock::now() - start);
  return out;
}

}  // namespace tokenmill::devices::cpu

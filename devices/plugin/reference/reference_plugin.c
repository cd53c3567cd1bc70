/* The reference device plugin: one device, "reference:0", that runs the
 * Llama-family forward in plain C on the host, one token at a time, with f32
 * weights (every claimed weight type is dequantized at upload) and double
 * sums. Slow on purpose: it is the example a vendor starts from and the
 * plugin that proves the loader, the ABI version check and the conformance
 * suite. It includes only the public header.
 *
 * Build-time variants (for tests of the daemon's loader only):
 *   REFERENCE_ABI_MAJOR=N        report another ABI major
 *   REFERENCE_NO_ENTRY_POINT     export no entry point
 *   REFERENCE_FAIL_FORWARD       every executor_forward fails (TM_INTERNAL)
 *   REFERENCE_KIND="name"        name another device kind
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef REFERENCE_FAIL_FORWARD
#define TMU_PLUGIN_NAME "reference plugin (failing build)"
#else
#define TMU_PLUGIN_NAME "reference plugin"
#endif
#include "tokenmill_device.h"
#include "tokenmill_device_util.h"

#ifndef REFERENCE_KIND
#define REFERENCE_KIND "reference"
#endif

#ifndef REFERENCE_ABI_MAJOR
#define REFERENCE_ABI_MAJOR TM_DEVICE_ABI_MAJOR
#endif

/* ------------------------------------------------------------------ */
/* Number formats                                                      */

static size_t type_block_elements(uint32_t type) {
  return type == TM_TENSOR_Q8_0 || type == TM_TENSOR_Q4_0 ? 32 : 1;
}

static size_t type_block_bytes(uint32_t type) {
  switch (type) {
    case TM_TENSOR_F32:
      return 4;
    case TM_TENSOR_F16:
      return 2;
    case TM_TENSOR_BF16:
      return 2;
    case TM_TENSOR_Q8_0:
      return 34;
    case TM_TENSOR_Q4_0:
      return 18;
    default:
      return 0;
  }
}

/* One row of `cols` elements of `type` to f32. */
static void dequantize_row(uint32_t type, const uint8_t* row, int64_t cols, float* out) {
  int64_t i, b;
  int j;
  switch (type) {
    case TM_TENSOR_F32:
      memcpy(out, row, (size_t)cols * sizeof(float));
      return;
    case TM_TENSOR_F16:
      for (i = 0; i < cols; ++i) out[i] = tmu_f16_to_f32(tmu_read_u16(row + 2 * i));
      return;
    case TM_TENSOR_BF16:
      for (i = 0; i < cols; ++i) {
        const uint32_t bits = (uint32_t)tmu_read_u16(row + 2 * i) << 16;
        memcpy(&out[i], &bits, sizeof(float));
      }
      return;
    case TM_TENSOR_Q8_0:
      for (b = 0; b < cols / 32; ++b) {
        const uint8_t* block = row + 34 * b;
        const float d = tmu_f16_to_f32(tmu_read_u16(block));
        for (j = 0; j < 32; ++j) out[32 * b + j] = d * (float)(int8_t)block[2 + j];
      }
      return;
    case TM_TENSOR_Q4_0:
      for (b = 0; b < cols / 32; ++b) {
        const uint8_t* block = row + 18 * b;
        const float d = tmu_f16_to_f32(tmu_read_u16(block));
        for (j = 0; j < 16; ++j) {
          out[32 * b + j] = d * (float)((block[2 + j] & 0x0f) - 8);
          out[32 * b + j + 16] = d * (float)((block[2 + j] >> 4) - 8);
        }
      }
      return;
  }
}

/* ------------------------------------------------------------------ */
/* Plugin and device                                                   */

struct tm_plugin {
  tm_plugin_options options;
  pthread_mutex_t mu;
  uint64_t memory_total; /* the host's RAM: the "device" memory */
  uint64_t used_bytes;   /* KV regions and weights, guarded by mu */
  tm_property properties[2];
};

static void plugin_log(const tm_plugin* p, int level, const char* message) {
  if (p->options.log != NULL) p->options.log(p->options.log_user, level, message);
}

static void add_used(tm_plugin* p, int64_t delta) {
  pthread_mutex_lock(&p->mu);
  p->used_bytes = (uint64_t)((int64_t)p->used_bytes + delta);
  pthread_mutex_unlock(&p->mu);
}

static tm_error* plugin_create(const tm_plugin_options* options, tm_plugin** out) {
  tm_plugin* p = (tm_plugin*)calloc(1, sizeof(tm_plugin));
  if (p == NULL) return tmu_error(TM_RESOURCE_EXHAUSTED, "out of memory");
  if (options != NULL) TMU_COPY_IN(&p->options, options);
  pthread_mutex_init(&p->mu, NULL);
  const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
  p->memory_total = pages > 0 && page_size > 0 ? (uint64_t)pages * (uint64_t)page_size : 0;
  p->properties[0].key = "implementation";
  p->properties[0].value = "naive f32 on the host";
  p->properties[1].key = "abi";
  p->properties[1].value = "1.0";
  plugin_log(p, TM_LOG_INFO, "reference plugin ready: 1 device");
  *out = p;
  return NULL;
}

static void plugin_destroy(tm_plugin* p) {
  if (p == NULL) return;
  pthread_mutex_destroy(&p->mu);
  free(p);
}

static uint32_t device_count(const tm_plugin* p) {
  (void)p;
  return 1;
}

static tm_error* device_info(const tm_plugin* p, uint32_t device, tm_device_info* info) {
  if (device != 0) return tmu_error(TM_NOT_FOUND, "no device %u", device);
  tm_device_info full;
  memset(&full, 0, sizeof(full));
  full.name = "tokenmill reference device (host, naive f32)";
  full.memory_total_bytes = p->memory_total;
  full.properties = p->properties;
  full.property_count = 2;
  full.weight_types = (1ull << TM_TENSOR_F32) | (1ull << TM_TENSOR_F16) | (1ull << TM_TENSOR_BF16) |
                      (1ull << TM_TENSOR_Q8_0) | (1ull << TM_TENSOR_Q4_0);
  full.kv_types = (1u << TM_KV_F16) | (1u << TM_KV_F32);
  full.architectures = (1u << TM_ARCH_LLAMA) | (1u << TM_ARCH_QWEN2) | (1u << TM_ARCH_QWEN3);
  full.max_block_tokens = 0;
  TMU_COPY_SIZED(info, full);
  return NULL;
}

static tm_error* device_sample(tm_plugin* p, uint32_t device, tm_device_sample* sample) {
  if (device != 0) return tmu_error(TM_NOT_FOUND, "no device %u", device);
  tm_device_sample full;
  memset(&full, 0, sizeof(full));
  pthread_mutex_lock(&p->mu);
  const uint64_t used = p->used_bytes;
  pthread_mutex_unlock(&p->mu);
  const long avail = sysconf(_SC_AVPHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
  full.present = TM_SAMPLE_MEMORY_USED;
  full.memory_total_bytes = p->memory_total;
  full.memory_used_bytes = used;
  if (avail > 0 && page_size > 0) {
    full.present |= TM_SAMPLE_MEMORY_FREE;
    full.memory_free_bytes = (uint64_t)avail * (uint64_t)page_size;
  }
  TMU_COPY_SIZED(sample, full);
  return NULL;
}

static tm_error* kv_region_alloc(tm_plugin* p, uint32_t device, uint64_t bytes, void** base) {
  if (device != 0) return tmu_error(TM_NOT_FOUND, "no device %u", device);
  if (bytes == 0) return tmu_error(TM_INVALID_ARGUMENT, "empty KV region");
  void* memory = calloc(1, (size_t)bytes);
  if (memory == NULL) {
    return tmu_error(TM_RESOURCE_EXHAUSTED, "no room for a KV region of %llu bytes",
                     (unsigned long long)bytes);
  }
  add_used(p, (int64_t)bytes);
  *base = memory;
  return NULL;
}

static void kv_region_free(tm_plugin* p, uint32_t device, void* base, uint64_t bytes) {
  (void)device;
  if (base == NULL) return;
  free(base);
  add_used(p, -(int64_t)bytes);
}

/* ------------------------------------------------------------------ */
/* Executor                                                            */

typedef struct layer_weights {
  float *attn_norm, *wq, *wk, *wv, *bq, *bk, *bv, *wo, *ffn_norm, *w_gate, *w_up, *w_down;
  float *q_norm, *k_norm; /* qwen3 per-head norms, NULL otherwise */
} layer_weights;

struct tm_executor {
  tm_plugin* plugin;
  tm_model hp; /* hyperparameters only: tensors and name are not kept */
  tm_executor_options options;
  uint64_t weight_bytes;
  float *embedding, *output_norm, *output;
  layer_weights* layers;
  float* inv_freq; /* head_dim / 2 */
  void** slots;    /* kv_blocks / blocks_per_page page addresses, NULL = unmapped */
  uint32_t slot_count;
  size_t block_bytes;
  /* Scratch for one token. */
  float *x, *h, *q, *k, *v, *attn, *o, *gate, *up, *down, *logits;
  double* scores;
};

/* Uploads tensor `name` of shape {rows, cols} (rows 0: a vector of cols) as
 * f32 into *out. Missing and optional: *out stays NULL. */
static tm_error* upload(tm_executor* e, const tm_model* m, const char* name, int64_t rows,
                        int64_t cols, int optional, float** out) {
  const tm_tensor* t = tmu_find_tensor(m, name);
  *out = NULL;
  if (t == NULL) {
    if (optional) return NULL;
    return tmu_error(TM_INVALID_ARGUMENT, "tensor %s missing", name);
  }
  const int64_t want_rows = rows == 0 ? 1 : rows;
  const int64_t t_rows = t->n_dims >= 2 ? t->shape[0] : 1;
  const int64_t t_cols = t->n_dims >= 1 ? t->shape[t->n_dims - 1] : 0;
  if (t->n_dims < 1 || t->n_dims > 2 || t_rows != want_rows || t_cols != cols) {
    return tmu_error(TM_INVALID_ARGUMENT, "tensor %s has the wrong shape", name);
  }
  const size_t block_bytes = type_block_bytes(t->type), block_elems = type_block_elements(t->type);
  if (block_bytes == 0) {
    return tmu_error(TM_UNIMPLEMENTED, "tensor %s has type %u, not one it runs", name, t->type);
  }
  if (cols % (int64_t)block_elems != 0) {
    return tmu_error(TM_INVALID_ARGUMENT, "tensor %s rows are not whole blocks", name);
  }
  const size_t row_bytes = (size_t)cols / block_elems * block_bytes;
  if (t->data == NULL || t->bytes < row_bytes * (size_t)want_rows) {
    return tmu_error(TM_INVALID_ARGUMENT, "tensor %s has too few bytes", name);
  }
  float* f = (float*)malloc((size_t)(want_rows * cols) * sizeof(float));
  if (f == NULL) return tmu_error(TM_RESOURCE_EXHAUSTED, "no room for %s", name);
  int64_t r;
  for (r = 0; r < want_rows; ++r) {
    dequantize_row(t->type, (const uint8_t*)t->data + (size_t)r * row_bytes, cols, f + r * cols);
  }
  e->weight_bytes += (uint64_t)(want_rows * cols) * sizeof(float);
  *out = f;
  return NULL;
}

static void executor_destroy(tm_executor* e) {
  if (e == NULL) return;
  int32_t l;
  if (e->layers != NULL) {
    for (l = 0; l < e->hp.n_layers; ++l) {
      layer_weights* w = &e->layers[l];
      free(w->attn_norm), free(w->wq), free(w->wk), free(w->wv), free(w->bq), free(w->bk);
      free(w->bv), free(w->wo), free(w->ffn_norm), free(w->w_gate), free(w->w_up), free(w->w_down);
      free(w->q_norm), free(w->k_norm);
    }
  }
  free(e->layers);
  free(e->embedding), free(e->output_norm);
  if (e->output != e->embedding) free(e->output);
  free(e->inv_freq), free(e->slots);
  free(e->x), free(e->h), free(e->q), free(e->k), free(e->v), free(e->attn), free(e->o);
  free(e->gate), free(e->up), free(e->down), free(e->logits), free(e->scores);
  add_used(e->plugin, -(int64_t)e->weight_bytes);
  free(e);
}

static tm_error* executor_create(tm_plugin* p, uint32_t device, const tm_model* model,
                                 const tm_executor_options* options, tm_executor** out) {
  if (device != 0) return tmu_error(TM_NOT_FOUND, "no device %u", device);
  if (model == NULL || options == NULL || model->struct_size < sizeof(tm_model) ||
      options->struct_size < sizeof(tm_executor_options)) {
    return tmu_error(TM_INVALID_ARGUMENT, "model or options missing or too old");
  }
  const tm_model* m = model;
  if (m->architecture != TM_ARCH_LLAMA && m->architecture != TM_ARCH_QWEN2 &&
      m->architecture != TM_ARCH_QWEN3) {
    return tmu_error(TM_UNIMPLEMENTED, "architecture %u not supported", m->architecture);
  }
  if (m->dim <= 0 || m->n_layers <= 0 || m->n_heads <= 0 || m->n_kv_heads <= 0 ||
      m->head_dim <= 0 || m->head_dim % 2 != 0 || m->ffn_dim <= 0 || m->vocab_size <= 0 ||
      m->context_length <= 0 || m->n_heads % m->n_kv_heads != 0) {
    return tmu_error(TM_INVALID_ARGUMENT, "bad hyperparameters");
  }
  if (options->block_tokens < 1 ||
      (options->kv_type != TM_KV_F16 && options->kv_type != TM_KV_F32) ||
      options->blocks_per_page < 1 || options->kv_blocks % options->blocks_per_page != 0 ||
      options->max_batch_tokens < 1) {
    return tmu_error(TM_INVALID_ARGUMENT, "bad executor options");
  }
  tm_executor* e = (tm_executor*)calloc(1, sizeof(tm_executor));
  if (e == NULL) return tmu_error(TM_RESOURCE_EXHAUSTED, "out of memory");
  e->plugin = p;
  e->hp = *m;
  e->hp.tensors = NULL;
  e->hp.tensor_count = 0;
  e->hp.name = NULL;
  e->options = *options;
  const size_t kv_size = options->kv_type == TM_KV_F16 ? 2 : 4;
  e->block_bytes = (size_t)m->n_layers * 2 * (size_t)m->n_kv_heads * (size_t)options->block_tokens *
                   (size_t)m->head_dim * kv_size;
  if (e->block_bytes * options->blocks_per_page > options->page_bytes) {
    free(e);
    return tmu_error(TM_INVALID_ARGUMENT, "%u blocks do not fit a page", options->blocks_per_page);
  }

  const int64_t dim = m->dim, q_dim = (int64_t)m->n_heads * m->head_dim;
  const int64_t kv_dim = (int64_t)m->n_kv_heads * m->head_dim, ffn = m->ffn_dim;
  char name[64];
  tm_error* err = NULL;
  float* freq_factors = NULL;
#define UPLOAD(tensor_name, rows, cols, optional, dst) \
  if (err == NULL) err = upload(e, m, tensor_name, rows, cols, optional, dst)
  UPLOAD("token_embd.weight", m->vocab_size, dim, 0, &e->embedding);
  UPLOAD("output_norm.weight", 0, dim, 0, &e->output_norm);
  if (err == NULL) {
    const tm_tensor* output = tmu_find_tensor(m, "output.weight");
    const tm_tensor* embd = tmu_find_tensor(m, "token_embd.weight");
    if (output != NULL && embd != NULL && output->data == embd->data &&
        output->type == embd->type) {
      e->output = e->embedding; /* tied */
    } else {
      UPLOAD("output.weight", m->vocab_size, dim, 0, &e->output);
    }
  }
  UPLOAD("rope_freqs.weight", 0, m->head_dim / 2, 1, &freq_factors);
  e->layers =
      err == NULL ? (layer_weights*)calloc((size_t)m->n_layers, sizeof(layer_weights)) : NULL;
  if (err == NULL && e->layers == NULL) err = tmu_error(TM_RESOURCE_EXHAUSTED, "out of memory");
  int32_t l;
  for (l = 0; err == NULL && l < m->n_layers; ++l) {
    layer_weights* w = &e->layers[l];
#define LAYER(suffix, rows, cols, optional, dst)             \
  snprintf(name, sizeof(name), "blk.%d.%s", (int)l, suffix); \
  UPLOAD(name, rows, cols, optional, dst)
    LAYER("attn_norm.weight", 0, dim, 0, &w->attn_norm);
    LAYER("attn_q.weight", q_dim, dim, 0, &w->wq);
    LAYER("attn_k.weight", kv_dim, dim, 0, &w->wk);
    LAYER("attn_v.weight", kv_dim, dim, 0, &w->wv);
    LAYER("attn_q.bias", 0, q_dim, 1, &w->bq);
    LAYER("attn_k.bias", 0, kv_dim, 1, &w->bk);
    LAYER("attn_v.bias", 0, kv_dim, 1, &w->bv);
    LAYER("attn_q_norm.weight", 0, m->head_dim, m->architecture != TM_ARCH_QWEN3, &w->q_norm);
    LAYER("attn_k_norm.weight", 0, m->head_dim, m->architecture != TM_ARCH_QWEN3, &w->k_norm);
    LAYER("attn_output.weight", dim, q_dim, 0, &w->wo);
    LAYER("ffn_norm.weight", 0, dim, 0, &w->ffn_norm);
    LAYER("ffn_gate.weight", ffn, dim, 0, &w->w_gate);
    LAYER("ffn_up.weight", ffn, dim, 0, &w->w_up);
    LAYER("ffn_down.weight", dim, ffn, 0, &w->w_down);
#undef LAYER
  }
#undef UPLOAD
  if (err == NULL) {
    e->slot_count = options->kv_blocks / options->blocks_per_page;
    e->inv_freq = (float*)malloc((size_t)(m->head_dim / 2) * sizeof(float));
    e->slots = (void**)calloc(e->slot_count > 0 ? e->slot_count : 1, sizeof(void*));
    e->x = (float*)malloc((size_t)dim * sizeof(float));
    e->h = (float*)malloc((size_t)dim * sizeof(float));
    e->o = (float*)malloc((size_t)dim * sizeof(float));
    e->down = (float*)malloc((size_t)dim * sizeof(float));
    e->q = (float*)malloc((size_t)q_dim * sizeof(float));
    e->attn = (float*)malloc((size_t)q_dim * sizeof(float));
    e->k = (float*)malloc((size_t)kv_dim * sizeof(float));
    e->v = (float*)malloc((size_t)kv_dim * sizeof(float));
    e->gate = (float*)malloc((size_t)ffn * sizeof(float));
    e->up = (float*)malloc((size_t)ffn * sizeof(float));
    e->logits = (float*)malloc((size_t)m->vocab_size * sizeof(float));
    e->scores = (double*)malloc((size_t)m->context_length * sizeof(double));
    if (!e->inv_freq || !e->slots || !e->x || !e->h || !e->o || !e->down || !e->q || !e->attn ||
        !e->k || !e->v || !e->gate || !e->up || !e->logits || !e->scores) {
      err = tmu_error(TM_RESOURCE_EXHAUSTED, "out of memory");
    } else {
      tmu_rope_inverse_frequencies(m, freq_factors, e->inv_freq);
    }
  }
  free(freq_factors);
  add_used(p, (int64_t)e->weight_bytes);
  if (err != NULL) {
    executor_destroy(e);
    return err;
  }
  *out = e;
  return NULL;
}

static tm_error* executor_map_page(tm_executor* e, uint32_t slot, void* page) {
  if (slot >= e->slot_count) {
    return tmu_error(TM_INVALID_ARGUMENT, "slot %u past %u slots", slot, e->slot_count);
  }
  if (page == NULL) return tmu_error(TM_INVALID_ARGUMENT, "null page");
  if (e->slots[slot] != NULL) {
    return tmu_error(TM_INVALID_ARGUMENT, "slot %u already mapped", slot);
  }
  e->slots[slot] = page;
  return NULL;
}

static tm_error* executor_unmap_page(tm_executor* e, uint32_t slot) {
  if (slot >= e->slot_count || e->slots[slot] == NULL) {
    return tmu_error(TM_INVALID_ARGUMENT, "slot %u is not mapped", slot);
  }
  e->slots[slot] = NULL;
  return NULL;
}

/* Address of element (layer, kv, head, position) of a sequence's cache. */
static uint8_t* kv_at(const tm_executor* e, const uint32_t* table, int32_t layer, int kv,
                      int32_t head, int32_t pos) {
  const int32_t bt = e->options.block_tokens;
  const uint32_t block = table[pos / bt];
  uint8_t* page = (uint8_t*)e->slots[block / e->options.blocks_per_page];
  const size_t element = e->options.kv_type == TM_KV_F16 ? 2 : 4;
  const size_t slab =
      (((size_t)layer * 2 + (size_t)kv) * (size_t)e->hp.n_kv_heads + (size_t)head) * (size_t)bt;
  return page + (block % e->options.blocks_per_page) * e->block_bytes +
         (slab + (size_t)(pos % bt)) * (size_t)e->hp.head_dim * element;
}

static void kv_store(const tm_executor* e, uint8_t* dst, const float* src, int32_t n) {
  int32_t i;
  if (e->options.kv_type == TM_KV_F32) {
    memcpy(dst, src, (size_t)n * sizeof(float));
    return;
  }
  for (i = 0; i < n; ++i) {
    const uint16_t h = tmu_f32_to_f16(src[i]);
    memcpy(dst + 2 * i, &h, 2);
  }
}

static float kv_load(const tm_executor* e, const uint8_t* src, int32_t i) {
  if (e->options.kv_type == TM_KV_F32) {
    float f;
    memcpy(&f, src + 4 * i, sizeof(f));
    return f;
  }
  return tmu_f16_to_f32(tmu_read_u16(src + 2 * i));
}

/* y = W x (+ bias), W rows x cols, double sums. */
static void linear(const float* w, const float* bias, int64_t rows, int64_t cols, const float* x,
                   float* y) {
  int64_t r, c;
  for (r = 0; r < rows; ++r) {
    double sum = 0.0;
    const float* row = w + r * cols;
    for (c = 0; c < cols; ++c) sum += (double)row[c] * (double)x[c];
    y[r] = (float)sum + (bias != NULL ? bias[r] : 0.0f);
  }
}

static void rms_norm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  double sum = 0.0;
  int64_t i;
  for (i = 0; i < n; ++i) sum += (double)x[i] * x[i];
  const double scale = 1.0 / sqrt(sum / (double)n + eps);
  for (i = 0; i < n; ++i) out[i] = (float)(x[i] * scale * weight[i]);
}

static void rope(const tm_executor* e, float* x, int32_t heads, int32_t pos) {
  const int32_t hd = e->hp.head_dim, half = hd / 2;
  int32_t h, i;
  for (h = 0; h < heads; ++h) {
    float* head = x + (int64_t)h * hd;
    for (i = 0; i < half; ++i) {
      const double angle = pos * (double)e->inv_freq[i];
      const double c = cos(angle), s = sin(angle);
      const int32_t a = e->hp.rope_style == TM_ROPE_ADJACENT_PAIRS ? 2 * i : i;
      const int32_t b = e->hp.rope_style == TM_ROPE_ADJACENT_PAIRS ? 2 * i + 1 : i + half;
      const double x0 = head[a], x1 = head[b];
      head[a] = (float)(x0 * c - x1 * s);
      head[b] = (float)(x0 * s + x1 * c);
    }
  }
}

/* One token of one sequence at `pos`; logits into `logits` when not NULL. */
static void forward_token(tm_executor* e, const uint32_t* table, int32_t token, int32_t pos,
                          float* logits) {
  const tm_model* m = &e->hp;
  const int64_t dim = m->dim, hd = m->head_dim, heads = m->n_heads, kv_heads = m->n_kv_heads;
  const int64_t q_dim = heads * hd, kv_dim = kv_heads * hd, ffn = m->ffn_dim;
  const int64_t group = heads / kv_heads;
  const double scale = 1.0 / sqrt((double)hd);
  int32_t l;
  int64_t i, qh, p, d;
  memcpy(e->x, e->embedding + (int64_t)token * dim, (size_t)dim * sizeof(float));
  for (l = 0; l < m->n_layers; ++l) {
    const layer_weights* w = &e->layers[l];
    rms_norm(e->x, w->attn_norm, dim, m->rms_norm_eps, e->h);
    linear(w->wq, w->bq, q_dim, dim, e->h, e->q);
    linear(w->wk, w->bk, kv_dim, dim, e->h, e->k);
    linear(w->wv, w->bv, kv_dim, dim, e->h, e->v);
    if (w->q_norm != NULL) {
      for (i = 0; i < q_dim; i += hd) rms_norm(e->q + i, w->q_norm, hd, m->rms_norm_eps, e->q + i);
    }
    if (w->k_norm != NULL) {
      for (i = 0; i < kv_dim; i += hd) rms_norm(e->k + i, w->k_norm, hd, m->rms_norm_eps, e->k + i);
    }
    rope(e, e->q, m->n_heads, pos);
    rope(e, e->k, m->n_kv_heads, pos);
    for (i = 0; i < kv_heads; ++i) {
      kv_store(e, kv_at(e, table, l, 0, (int32_t)i, pos), e->k + i * hd, (int32_t)hd);
      kv_store(e, kv_at(e, table, l, 1, (int32_t)i, pos), e->v + i * hd, (int32_t)hd);
    }
    /* Causal attention over [0, pos]; query head qh reads kv head qh / group. */
    for (qh = 0; qh < heads; ++qh) {
      const float* qv = e->q + qh * hd;
      const int32_t kvh = (int32_t)(qh / group);
      double max = -INFINITY, sum = 0.0;
      for (p = 0; p <= pos; ++p) {
        const uint8_t* kp = kv_at(e, table, l, 0, kvh, (int32_t)p);
        double dot = 0.0;
        for (d = 0; d < hd; ++d) dot += (double)qv[d] * kv_load(e, kp, (int32_t)d);
        e->scores[p] = dot * scale;
        if (e->scores[p] > max) max = e->scores[p];
      }
      for (p = 0; p <= pos; ++p) sum += (e->scores[p] = exp(e->scores[p] - max));
      for (d = 0; d < hd; ++d) {
        double acc = 0.0;
        for (p = 0; p <= pos; ++p) {
          acc += e->scores[p] * kv_load(e, kv_at(e, table, l, 1, kvh, (int32_t)p), (int32_t)d);
        }
        e->attn[qh * hd + d] = (float)(acc / sum);
      }
    }
    linear(w->wo, NULL, dim, q_dim, e->attn, e->o);
    for (i = 0; i < dim; ++i) e->x[i] += e->o[i];
    rms_norm(e->x, w->ffn_norm, dim, m->rms_norm_eps, e->h);
    linear(w->w_gate, NULL, ffn, dim, e->h, e->gate);
    linear(w->w_up, NULL, ffn, dim, e->h, e->up);
    for (i = 0; i < ffn; ++i) {
      const double g = e->gate[i];
      e->gate[i] = (float)(g / (1.0 + exp(-g)) * e->up[i]);
    }
    linear(w->w_down, NULL, dim, ffn, e->gate, e->down);
    for (i = 0; i < dim; ++i) e->x[i] += e->down[i];
  }
  if (logits == NULL) return;
  rms_norm(e->x, e->output_norm, dim, m->rms_norm_eps, e->h);
  linear(e->output, NULL, m->vocab_size, dim, e->h, logits);
}

static int slot_mapped(const void* user, uint32_t slot) {
  return ((const tm_executor*)user)->slots[slot] != NULL;
}

static tm_error* executor_forward(tm_executor* e, const tm_batch* batch, tm_step_output* output) {
  const tmu_batch_limits limits = tmu_limits_for(&e->hp, &e->options, slot_mapped, e);
  tm_error* err = tmu_check_batch(&limits, batch, output, NULL);
  if (err != NULL) return err;
#ifdef REFERENCE_FAIL_FORWARD
  return tmu_error(TM_INTERNAL, "the device lost its state");
#endif
  const uint64_t start = tmu_now_ns();
  const int32_t vocab = e->hp.vocab_size;
  float* rows = output->logits;
  int32_t* ids = output->argmax;
  size_t s;
  uint32_t i;
  for (s = 0; s < batch->n_seqs; ++s) {
    const tm_sequence_step* q = &batch->seqs[s];
    for (i = 0; i < q->n_tokens; ++i) {
      const int last = i + 1 == q->n_tokens;
      float* logits = NULL;
      if (q->logits == TM_LOGITS_ALL || (last && q->logits == TM_LOGITS_LAST)) {
        logits = rows;
        rows += vocab;
      } else if (last && q->logits == TM_LOGITS_ARGMAX) {
        logits = e->logits;
      }
      forward_token(e, q->block_table, q->tokens[i], q->start_pos + (int32_t)i, logits);
      if (last && q->logits == TM_LOGITS_ARGMAX) *ids++ = tmu_greedy_token(e->logits, vocab);
    }
  }
  output->device_time_ns = tmu_now_ns() - start;
  return NULL;
}

static void* get_proc_address(const char* name) {
  (void)name;
  return NULL; /* no optional features */
}

/* ------------------------------------------------------------------ */
/* Entry point                                                         */

static const tm_device_api api = {
    .struct_size = sizeof(tm_device_api),
    .abi_major = REFERENCE_ABI_MAJOR,
    .abi_minor = TM_DEVICE_ABI_MINOR,
    .kind = REFERENCE_KIND,
    .plugin_version = "reference-1.0",
    .error_code = tmu_error_code,
    .error_message = tmu_error_message,
    .error_destroy = tmu_error_destroy,
    .plugin_create = plugin_create,
    .plugin_destroy = plugin_destroy,
    .device_count = device_count,
    .device_info = device_info,
    .device_sample = device_sample,
    .kv_region_alloc = kv_region_alloc,
    .kv_region_free = kv_region_free,
    .executor_create = executor_create,
    .executor_destroy = executor_destroy,
    .executor_map_page = executor_map_page,
    .executor_unmap_page = executor_unmap_page,
    .executor_forward = executor_forward,
    .get_proc_address = get_proc_address,
};

#ifndef REFERENCE_NO_ENTRY_POINT
TM_DEVICE_EXPORT const tm_device_api* tokenmill_device_plugin(void) { return &api; }
#else
TM_DEVICE_EXPORT const tm_device_api* tokenmill_device_plugin_misspelt(void) { return &api; }
#endif

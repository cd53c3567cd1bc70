/* The OpenCL plugin's executors: weights uploaded into device buffers, the
 * kernels (kernels.cl) built once per executor with clBuildProgram,
 * activations sized for max_batch_tokens, and the page slots. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencl_kernels.h" /* generated: opencl_kernels_source[] from kernels.cl */
#include "opencl_plugin.h"

static const char* const kernel_names[KERNEL_COUNT] = {
    "embed", "rms_norm", "matmul", "rope", "kv_store", "attention", "silu_glu", "argmax"};

static void release_weight(weight* w) {
  if (w->buffer != NULL) clReleaseMemObject(w->buffer);
  w->buffer = NULL;
}

void ocl_release_mem(cl_mem* m) {
  if (*m != NULL) clReleaseMemObject(*m);
  *m = NULL;
}

void ocl_executor_destroy(tm_executor* e) {
  if (e == NULL) return;
  int i;
  if (e->layers != NULL) {
    int32_t l;
    for (l = 0; l < e->hp.n_layers; ++l) {
      layer_weights* w = &e->layers[l];
      weight* all[] = {&w->attn_norm, &w->wq, &w->wk,       &w->wv,     &w->bq,   &w->bk,
                       &w->bv,        &w->wo, &w->ffn_norm, &w->w_gate, &w->w_up, &w->w_down};
      size_t j;
      for (j = 0; j < sizeof(all) / sizeof(all[0]); ++j) release_weight(all[j]);
    }
    free(e->layers);
  }
  if (e->output.buffer == e->embedding.buffer) e->output.buffer = NULL; /* tied */
  release_weight(&e->embedding);
  release_weight(&e->output_norm);
  release_weight(&e->output);
  cl_mem* buffers[] = {&e->inv_freq,    &e->x,         &e->h,           &e->q,        &e->k,
                       &e->v,           &e->attn,      &e->gate,        &e->up,       &e->logits,
                       &e->tokens,      &e->positions, &e->table_start, &e->all_rows, &e->out_rows,
                       &e->argmax_rows, &e->tables,    &e->ids};
  size_t j;
  for (j = 0; j < sizeof(buffers) / sizeof(buffers[0]); ++j) ocl_release_mem(buffers[j]);
  for (i = 0; i < KERNEL_COUNT; ++i) {
    if (e->kernels[i] != NULL) clReleaseKernel(e->kernels[i]);
  }
  if (e->program != NULL) clReleaseProgram(e->program);
  pthread_mutex_lock(&e->device->mu);
  e->device->used_bytes -= e->device_bytes;
  pthread_mutex_unlock(&e->device->mu);
  free(e->slots);
  free(e->host_tokens), free(e->host_positions), free(e->host_table_start);
  free(e->host_out_rows), free(e->host_argmax_rows), free(e->host_tables);
  free(e);
}

static uint64_t row_bytes(uint32_t type, int64_t cols) {
  switch (type) {
    case TM_TENSOR_F32:
      return (uint64_t)cols * 4;
    case TM_TENSOR_F16:
      return (uint64_t)cols * 2;
    case TM_TENSOR_Q8_0:
      return (uint64_t)(cols / 32) * 34;
    default:
      return 0;
  }
}

/* Uploads tensor `name` ({rows, cols}, or {cols} when rows == 0) into a
 * device buffer. Norms, biases and rope_freqs must be f32. */
static tm_error* upload(tm_executor* e, const tm_model* m, const char* name, int64_t rows,
                        int64_t cols, int optional, weight* dst) {
  const tm_tensor* t = tmu_find_tensor(m, name);
  if (t == NULL) {
    if (optional) return NULL;
    return tmu_error(TM_INVALID_ARGUMENT, "tensor %s missing", name);
  }
  const int want_dims = rows == 0 ? 1 : 2;
  if ((int)t->n_dims != want_dims || (rows != 0 && t->shape[0] != rows) ||
      t->shape[want_dims - 1] != cols) {
    return tmu_error(TM_INVALID_ARGUMENT, "tensor %s has the wrong shape", name);
  }
  if (rows == 0 && t->type != TM_TENSOR_F32) {
    return tmu_error(TM_UNIMPLEMENTED, "tensor %s must be f32", name);
  }
  if (t->type != TM_TENSOR_F32 && t->type != TM_TENSOR_F16 && t->type != TM_TENSOR_Q8_0) {
    return tmu_error(TM_UNIMPLEMENTED, "tensor %s has type %u (F32, F16, Q8_0 run)", name, t->type);
  }
  if (t->type == TM_TENSOR_Q8_0 && cols % 32 != 0) {
    return tmu_error(TM_INVALID_ARGUMENT, "Q8_0 tensor %s has %lld columns", name, (long long)cols);
  }
  const uint64_t bytes = row_bytes(t->type, cols) * (uint64_t)(rows == 0 ? 1 : rows);
  if (t->data == NULL || t->bytes < bytes) {
    return tmu_error(TM_INVALID_ARGUMENT, "tensor %s holds %llu bytes, needs %llu", name,
                     (unsigned long long)t->bytes, (unsigned long long)bytes);
  }
  cl_int rc;
  dst->buffer = clCreateBuffer(e->device->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                               (size_t)bytes, (void*)t->data, &rc);
  if (rc != CL_SUCCESS) return ocl_cl_failure(rc, "uploading a weight");
  dst->type = t->type;
  e->device_bytes += bytes;
  return NULL;
}

/* Builds the kernels: one program per executor; the build log goes to the
 * daemon's log and into the error on failure. */
static tm_error* build_program(tm_executor* e) {
  cl_int rc;
  const char* source = opencl_kernels_source;
  e->program = clCreateProgramWithSource(e->device->context, 1, &source, NULL, &rc);
  if (rc != CL_SUCCESS) return ocl_cl_failure(rc, "clCreateProgramWithSource");
  char flags[256];
  snprintf(flags, sizeof(flags), "-cl-std=CL1.2 -DWG=%d -DHEAD_DIM=%d -DACC_N=%d -DKV_HALF=%d",
           (int)e->wg, (int)e->hp.head_dim, (int)((e->hp.head_dim + (int)e->wg - 1) / (int)e->wg),
           e->options.kv_type == TM_KV_F16 ? 1 : 0);
  rc = clBuildProgram(e->program, 1, &e->device->id, flags, NULL, NULL);
  if (rc != CL_SUCCESS) {
    char log[768] = "";
    clGetProgramBuildInfo(e->program, e->device->id, CL_PROGRAM_BUILD_LOG, sizeof(log) - 1, log,
                          NULL);
    ocl_plugin_log(e->plugin, TM_LOG_ERROR, "opencl plugin: kernel build failed (%d): %s", (int)rc,
                   log);
    return tmu_error(TM_INTERNAL, "kernel build failed (OpenCL error %d): %s", (int)rc, log);
  }
  int i;
  for (i = 0; i < KERNEL_COUNT; ++i) {
    e->kernels[i] = clCreateKernel(e->program, kernel_names[i], &rc);
    if (rc != CL_SUCCESS) return ocl_cl_failure(rc, kernel_names[i]);
  }
  return NULL;
}

static tm_error* scratch(tm_executor* e, cl_mem* m, size_t bytes) {
  cl_int rc;
  *m = clCreateBuffer(e->device->context, CL_MEM_READ_WRITE, bytes > 0 ? bytes : 4, NULL, &rc);
  if (rc != CL_SUCCESS) return ocl_cl_failure(rc, "clCreateBuffer (activations)");
  e->device_bytes += bytes;
  return NULL;
}

tm_error* ocl_executor_create(tm_plugin* p, uint32_t device, const tm_model* model,
                              const tm_executor_options* options, tm_executor** out) {
  if (device >= p->count) return ocl_no_device(device);
  if (model == NULL || options == NULL || model->struct_size < sizeof(tm_model) ||
      options->struct_size < sizeof(tm_executor_options)) {
    return tmu_error(TM_INVALID_ARGUMENT, "model or options missing or too old");
  }
  const tm_model* m = model;
  if (m->architecture != TM_ARCH_LLAMA && m->architecture != TM_ARCH_QWEN2) {
    return tmu_error(TM_UNIMPLEMENTED, "architecture %u not supported", m->architecture);
  }
  if (m->rope_style != TM_ROPE_ADJACENT_PAIRS && m->rope_style != TM_ROPE_HALVES) {
    return tmu_error(TM_UNIMPLEMENTED, "RoPE style %u not supported", m->rope_style);
  }
  if (m->dim <= 0 || m->n_layers <= 0 || m->n_heads <= 0 || m->n_kv_heads <= 0 ||
      m->head_dim <= 0 || m->head_dim % 2 != 0 || m->head_dim > 1024 || m->ffn_dim <= 0 ||
      m->vocab_size <= 0 || m->context_length <= 0 || m->n_heads % m->n_kv_heads != 0) {
    return tmu_error(TM_INVALID_ARGUMENT, "bad hyperparameters");
  }
  if (options->block_tokens < 1 ||
      (options->kv_type != TM_KV_F16 && options->kv_type != TM_KV_F32) ||
      options->blocks_per_page < 1 || options->kv_blocks % options->blocks_per_page != 0 ||
      options->max_batch_tokens < 1 || options->page_bytes % 4 != 0) {
    return tmu_error(TM_INVALID_ARGUMENT, "bad executor options");
  }
  tm_executor* e = (tm_executor*)calloc(1, sizeof(tm_executor));
  if (e == NULL) return tmu_error(TM_RESOURCE_EXHAUSTED, "out of memory");
  e->plugin = p;
  e->device = &p->devices[device];
  e->hp = *m;
  e->hp.tensors = NULL;
  e->hp.tensor_count = 0;
  e->hp.name = NULL;
  e->options = *options;
  e->element_bytes = options->kv_type == TM_KV_F16 ? 2 : 4;
  e->block_bytes = (size_t)m->n_layers * 2 * (size_t)m->n_kv_heads * (size_t)options->block_tokens *
                   (size_t)m->head_dim * e->element_bytes;
  e->wg = MAX_WG;
  while (e->wg > 1 && e->wg > e->device->max_work_group) e->wg /= 2;
  if (e->wg < MATMUL_TOKENS) {
    free(e);
    return tmu_error(TM_UNIMPLEMENTED, "work-groups of %zu items are too small",
                     p->devices[device].max_work_group);
  }
  if (e->block_bytes * options->blocks_per_page > options->page_bytes) {
    free(e);
    return tmu_error(TM_INVALID_ARGUMENT, "%u blocks do not fit a page", options->blocks_per_page);
  }
  e->slot_count = options->kv_blocks / options->blocks_per_page;

  const int64_t dim = m->dim, q_dim = (int64_t)m->n_heads * m->head_dim;
  const int64_t kv_dim = (int64_t)m->n_kv_heads * m->head_dim, ffn = m->ffn_dim;
  const size_t tokens = (size_t)options->max_batch_tokens;
  tm_error* err = build_program(e);
  char name[64];
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
    LAYER("attn_output.weight", dim, q_dim, 0, &w->wo);
    LAYER("ffn_norm.weight", 0, dim, 0, &w->ffn_norm);
    LAYER("ffn_gate.weight", ffn, dim, 0, &w->w_gate);
    LAYER("ffn_up.weight", ffn, dim, 0, &w->w_up);
    LAYER("ffn_down.weight", dim, ffn, 0, &w->w_down);
#undef LAYER
  }
  /* RoPE inverse frequencies, computed in double on the host. */
  if (err == NULL) {
    const int32_t half = m->head_dim / 2;
    float* inv = (float*)malloc((size_t)half * sizeof(float));
    float* factors = NULL;
    const tm_tensor* f = tmu_find_tensor(m, "rope_freqs.weight");
    if (f != NULL && (f->type != TM_TENSOR_F32 || f->n_dims != 1 || f->shape[0] != half ||
                      f->data == NULL || f->bytes < (uint64_t)half * sizeof(float))) {
      err = tmu_error(TM_INVALID_ARGUMENT, "rope_freqs.weight is not f32 {%d}", (int)half);
    } else if (f != NULL) {
      factors = (float*)malloc((size_t)half * sizeof(float));
      if (factors != NULL) memcpy(factors, f->data, (size_t)half * sizeof(float));
    }
    if (err == NULL && (inv == NULL || (f != NULL && factors == NULL))) {
      err = tmu_error(TM_RESOURCE_EXHAUSTED, "out of memory");
    }
    if (err == NULL) {
      tmu_rope_inverse_frequencies(m, factors, inv);
      cl_int rc;
      e->inv_freq = clCreateBuffer(e->device->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                   (size_t)half * sizeof(float), inv, &rc);
      if (rc != CL_SUCCESS) err = ocl_cl_failure(rc, "uploading RoPE frequencies");
    }
    free(inv);
    free(factors);
  }
#undef UPLOAD
#define SCRATCH(member, bytes) \
  if (err == NULL) err = scratch(e, &e->member, (size_t)(bytes))
  SCRATCH(x, tokens * dim * 4);
  SCRATCH(h, tokens * dim * 4);
  SCRATCH(q, tokens * q_dim * 4);
  SCRATCH(k, tokens * kv_dim * 4);
  SCRATCH(v, tokens * kv_dim * 4);
  SCRATCH(attn, tokens * q_dim * 4);
  SCRATCH(gate, tokens * ffn * 4);
  SCRATCH(up, tokens * ffn * 4);
  e->logits_rows = 1; /* grows to the most rows a step has wanted */
  SCRATCH(logits, e->logits_rows * (size_t)m->vocab_size * 4);
  SCRATCH(tokens, tokens * 4);
  SCRATCH(positions, tokens * 4);
  SCRATCH(table_start, tokens * 4);
  SCRATCH(out_rows, tokens * 4);
  SCRATCH(argmax_rows, tokens * 4);
  SCRATCH(ids, tokens * 4);
#undef SCRATCH
  if (err == NULL) {
    e->slots = (uint64_t*)malloc((e->slot_count > 0 ? e->slot_count : 1) * sizeof(uint64_t));
    e->host_tokens = (int32_t*)malloc(tokens * 4);
    e->host_positions = (int32_t*)malloc(tokens * 4);
    e->host_table_start = (int32_t*)malloc(tokens * 4);
    e->host_out_rows = (int32_t*)malloc(tokens * 4);
    e->host_argmax_rows = (int32_t*)malloc(tokens * 4);
    if (!e->slots || !e->host_tokens || !e->host_positions || !e->host_table_start ||
        !e->host_out_rows || !e->host_argmax_rows) {
      err = tmu_error(TM_RESOURCE_EXHAUSTED, "out of memory");
    }
  }
  if (err == NULL) {
    uint32_t s;
    for (s = 0; s < e->slot_count; ++s) e->slots[s] = UINT64_MAX;
    /* all_rows = 0, 1, ..., tokens - 1: the rows every layer's norm reads. */
    size_t i;
    for (i = 0; i < tokens; ++i) e->host_out_rows[i] = (int32_t)i;
    cl_int rc;
    e->all_rows = clCreateBuffer(e->device->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                 tokens * 4, e->host_out_rows, &rc);
    if (rc != CL_SUCCESS) err = ocl_cl_failure(rc, "clCreateBuffer (rows)");
    e->device_bytes += tokens * 4;
  }
  pthread_mutex_lock(&e->device->mu);
  e->device->used_bytes += e->device_bytes;
  pthread_mutex_unlock(&e->device->mu);
  if (err != NULL) {
    ocl_executor_destroy(e);
    return err;
  }
  *out = e;
  return NULL;
}

tm_error* ocl_executor_map_page(tm_executor* e, uint32_t slot, void* page) {
  if (slot >= e->slot_count) {
    return tmu_error(TM_INVALID_ARGUMENT, "slot %u past %u slots", slot, e->slot_count);
  }
  if (e->slots[slot] != UINT64_MAX) {
    return tmu_error(TM_INVALID_ARGUMENT, "slot %u already mapped", slot);
  }
  ocl_device* d = e->device;
  pthread_mutex_lock(&d->mu);
  const uint64_t offset = ocl_page_offset(d, page, e->options.page_bytes);
  pthread_mutex_unlock(&d->mu);
  if (offset == UINT64_MAX) {
    return tmu_error(TM_INVALID_ARGUMENT, "%p is no page of a KV region of %s", page,
                     d->text[PROP_DEVICE]);
  }
  e->slots[slot] = offset;
  return NULL;
}

tm_error* ocl_executor_unmap_page(tm_executor* e, uint32_t slot) {
  if (slot >= e->slot_count || e->slots[slot] == UINT64_MAX) {
    return tmu_error(TM_INVALID_ARGUMENT, "slot %u is not mapped", slot);
  }
  e->slots[slot] = UINT64_MAX;
  return NULL;
}

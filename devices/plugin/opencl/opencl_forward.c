/* The OpenCL plugin's forward: the batch checked, its tables staged on the
 * host, every layer's kernels enqueued on the device's queue, and only the
 * logits rows and argmax ids a step asks for read back. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "opencl_plugin.h"

/* Enqueue helpers: the first failure sticks in *rc and the rest do nothing. */
typedef struct enqueue_state {
  cl_command_queue queue;
  cl_int rc;
  const char* what;
} enqueue_state;

static void set_arg(enqueue_state* s, cl_kernel k, cl_uint index, size_t size, const void* value) {
  if (s->rc != CL_SUCCESS) return;
  s->rc = clSetKernelArg(k, index, size, value);
  if (s->rc != CL_SUCCESS) s->what = "clSetKernelArg";
}
#define ARG_MEM(s, k, i, m) set_arg((s), (k), (i), sizeof(cl_mem), &(m))
#define ARG_INT(s, k, i, v)                      \
  do {                                           \
    const cl_int v_ = (cl_int)(v);               \
    set_arg((s), (k), (i), sizeof(cl_int), &v_); \
  } while (0)
#define ARG_FLOAT(s, k, i, v)                      \
  do {                                             \
    const cl_float v_ = (cl_float)(v);             \
    set_arg((s), (k), (i), sizeof(cl_float), &v_); \
  } while (0)

static void run(enqueue_state* s, cl_kernel k, size_t g0, size_t g1, size_t l0, const char* what) {
  if (s->rc != CL_SUCCESS || g0 == 0 || g1 == 0) return;
  const size_t global[2] = {g0, g1}, local[2] = {l0, 1};
  s->rc =
      clEnqueueNDRangeKernel(s->queue, k, 2, NULL, global, l0 > 0 ? local : NULL, 0, NULL, NULL);
  if (s->rc != CL_SUCCESS) s->what = what;
}

static void write_buffer(enqueue_state* s, cl_mem m, size_t bytes, const void* data) {
  if (s->rc != CL_SUCCESS || bytes == 0) return;
  s->rc = clEnqueueWriteBuffer(s->queue, m, CL_FALSE, 0, bytes, data, 0, NULL, NULL);
  if (s->rc != CL_SUCCESS) s->what = "clEnqueueWriteBuffer";
}

/* y (tokens x rows) = x W^T (+ bias), added to y when accumulate. */
static void matmul(enqueue_state* s, const tm_executor* e, const weight* w, const weight* bias,
                   int64_t rows, int64_t cols, cl_mem x, cl_mem y, int accumulate, size_t tokens) {
  cl_kernel k = e->kernels[K_MATMUL];
  cl_mem b = bias != NULL ? bias->buffer : NULL;
  ARG_MEM(s, k, 0, w->buffer);
  ARG_INT(s, k, 1, w->type);
  ARG_INT(s, k, 2, rows);
  ARG_INT(s, k, 3, cols);
  ARG_MEM(s, k, 4, x);
  ARG_INT(s, k, 5, tokens);
  ARG_MEM(s, k, 6, b);
  ARG_INT(s, k, 7, accumulate);
  ARG_MEM(s, k, 8, y);
  run(s, k, e->wg * (size_t)rows, (tokens + MATMUL_TOKENS - 1) / MATMUL_TOKENS, e->wg, "matmul");
}

static void rms_norm(enqueue_state* s, const tm_executor* e, cl_mem x, cl_mem rows, const weight* w,
                     cl_mem out, size_t count) {
  cl_kernel k = e->kernels[K_RMS_NORM];
  ARG_MEM(s, k, 0, x);
  ARG_MEM(s, k, 1, rows);
  ARG_MEM(s, k, 2, w->buffer);
  ARG_INT(s, k, 3, e->hp.dim);
  ARG_FLOAT(s, k, 4, e->hp.rms_norm_eps);
  ARG_MEM(s, k, 5, out);
  run(s, k, e->wg, count, e->wg, "rms_norm");
}

static void rope(enqueue_state* s, const tm_executor* e, cl_mem x, int32_t heads, size_t tokens) {
  cl_kernel k = e->kernels[K_ROPE];
  ARG_MEM(s, k, 0, x);
  ARG_INT(s, k, 1, heads);
  ARG_INT(s, k, 2, heads * e->hp.head_dim);
  ARG_MEM(s, k, 3, e->positions);
  ARG_MEM(s, k, 4, e->inv_freq);
  ARG_INT(s, k, 5, e->hp.rope_style == TM_ROPE_ADJACENT_PAIRS);
  run(s, k, (size_t)heads * (size_t)(e->hp.head_dim / 2), tokens, 0, "rope");
}

/* Host-side tables of one step (d->mu held, nothing enqueued yet): per token its id, position and
 * where its sequence's block table starts; per sequence its blocks as element offsets into the
 * pool; the token rows whose logits go out, then the argmax rows. */
static tm_error* stage_batch(tm_executor* e, const tm_batch* batch, size_t* n_tokens,
                             size_t* n_tables, size_t* n_rows, size_t* n_argmax) {
  size_t total_blocks = 0, s;
  uint32_t i;
  for (s = 0; s < batch->n_seqs; ++s) {
    const tm_sequence_step* q = &batch->seqs[s];
    total_blocks += (size_t)((q->start_pos + (int64_t)q->n_tokens + e->options.block_tokens - 1) /
                             e->options.block_tokens);
  }
  if (total_blocks > e->host_tables_capacity) {
    uint64_t* grown = (uint64_t*)realloc(e->host_tables, total_blocks * sizeof(uint64_t));
    if (grown == NULL) return tmu_error(TM_RESOURCE_EXHAUSTED, "out of memory");
    e->host_tables = grown;
    e->host_tables_capacity = total_blocks;
  }
  size_t t = 0, b = 0, rows = 0, argmax = 0;
  /* Logits rows first in batch order (the output's order), argmax after. */
  for (s = 0; s < batch->n_seqs; ++s) {
    const tm_sequence_step* q = &batch->seqs[s];
    const int32_t start = (int32_t)b;
    const uint32_t blocks =
        (uint32_t)((q->start_pos + (int64_t)q->n_tokens + e->options.block_tokens - 1) /
                   e->options.block_tokens);
    for (i = 0; i < blocks; ++i) {
      const uint32_t id = q->block_table[i];
      const uint64_t byte = e->slots[id / e->options.blocks_per_page] +
                            (uint64_t)(id % e->options.blocks_per_page) * e->block_bytes;
      /* A page whose region was freed while mapped must not reach the
       * kernels: every block lies inside the pool. */
      if (byte + e->block_bytes > e->device->pool_bytes) {
        return tmu_error(TM_INVALID_ARGUMENT, "block %u is in a page of a freed KV region", id);
      }
      e->host_tables[b++] = byte / e->element_bytes;
    }
    for (i = 0; i < q->n_tokens; ++i, ++t) {
      e->host_tokens[t] = q->tokens[i];
      e->host_positions[t] = q->start_pos + (int32_t)i;
      e->host_table_start[t] = start;
      if (q->logits == TM_LOGITS_ALL || (i + 1 == q->n_tokens && q->logits == TM_LOGITS_LAST)) {
        e->host_out_rows[rows++] = (int32_t)t;
      }
    }
  }
  for (s = 0, t = 0; s < batch->n_seqs; ++s) {
    const tm_sequence_step* q = &batch->seqs[s];
    t += q->n_tokens;
    if (q->logits == TM_LOGITS_ARGMAX) e->host_argmax_rows[argmax++] = (int32_t)(t - 1);
  }
  *n_tokens = t;
  *n_tables = b;
  *n_rows = rows;
  *n_argmax = argmax;
  return NULL;
}

static int slot_mapped(const void* user, uint32_t slot) {
  return ((const tm_executor*)user)->slots[slot] != UINT64_MAX;
}

tm_error* ocl_executor_forward(tm_executor* e, const tm_batch* batch, tm_step_output* output) {
  const tmu_batch_limits limits = tmu_limits_for(&e->hp, &e->options, slot_mapped, e);
  tm_error* err = tmu_check_batch(&limits, batch, output, NULL);
  if (err != NULL) return err;
  size_t tokens = 0, tables = 0, rows = 0, argmax = 0, a;
  ocl_device* d = e->device;
  pthread_mutex_lock(&d->mu);
  const uint64_t start = tmu_now_ns(); /* the device is this step's from here */
  err = stage_batch(e, batch, &tokens, &tables, &rows, &argmax);
  if (err != NULL) {
    pthread_mutex_unlock(&d->mu);
    return err;
  }
  /* Argmax rows go after the logits rows in the final norm's output. */
  for (a = 0; a < argmax; ++a) e->host_out_rows[rows + a] = e->host_argmax_rows[a];
  for (a = 0; a < argmax; ++a) e->host_argmax_rows[a] = (int32_t)(rows + a);
  const size_t out_rows = rows + argmax;

  enqueue_state st = {d->queue, CL_SUCCESS, NULL};
  enqueue_state* s = &st;
  if (tables > e->tables_capacity) {
    ocl_release_mem(&e->tables);
    e->tables_capacity = 0;
    e->tables =
        clCreateBuffer(d->context, CL_MEM_READ_ONLY, tables * sizeof(uint64_t), NULL, &st.rc);
    if (st.rc == CL_SUCCESS) {
      e->tables_capacity = tables;
    } else {
      st.what = "clCreateBuffer (block tables)";
    }
  }
  if (st.rc == CL_SUCCESS && out_rows > e->logits_rows) {
    const size_t row_bytes = (size_t)e->hp.vocab_size * sizeof(float);
    ocl_release_mem(&e->logits);
    d->used_bytes -= e->logits_rows * row_bytes;
    e->device_bytes -= e->logits_rows * row_bytes;
    e->logits_rows = 0;
    e->logits = clCreateBuffer(d->context, CL_MEM_READ_WRITE, out_rows * row_bytes, NULL, &st.rc);
    if (st.rc == CL_SUCCESS) {
      e->logits_rows = out_rows;
      d->used_bytes += out_rows * row_bytes;
      e->device_bytes += out_rows * row_bytes;
    } else {
      st.what = "clCreateBuffer (logits)";
    }
  }
  write_buffer(s, e->tokens, tokens * 4, e->host_tokens);
  write_buffer(s, e->positions, tokens * 4, e->host_positions);
  write_buffer(s, e->table_start, tokens * 4, e->host_table_start);
  write_buffer(s, e->tables, tables * sizeof(uint64_t), e->host_tables);
  write_buffer(s, e->out_rows, out_rows * 4, e->host_out_rows);
  write_buffer(s, e->argmax_rows, argmax * 4, e->host_argmax_rows);

  const tm_model* m = &e->hp;
  const int64_t dim = m->dim, q_dim = (int64_t)m->n_heads * m->head_dim;
  const int64_t kv_dim = (int64_t)m->n_kv_heads * m->head_dim, ffn = m->ffn_dim;
  cl_kernel k = e->kernels[K_EMBED];
  ARG_MEM(s, k, 0, e->embedding.buffer);
  ARG_INT(s, k, 1, e->embedding.type);
  ARG_INT(s, k, 2, dim);
  ARG_MEM(s, k, 3, e->tokens);
  ARG_MEM(s, k, 4, e->x);
  run(s, k, (size_t)dim, tokens, 0, "embed");
  int32_t l;
  for (l = 0; l < m->n_layers; ++l) {
    const layer_weights* w = &e->layers[l];
    rms_norm(s, e, e->x, e->all_rows, &w->attn_norm, e->h, tokens);
    matmul(s, e, &w->wq, &w->bq, q_dim, dim, e->h, e->q, 0, tokens);
    matmul(s, e, &w->wk, &w->bk, kv_dim, dim, e->h, e->k, 0, tokens);
    matmul(s, e, &w->wv, &w->bv, kv_dim, dim, e->h, e->v, 0, tokens);
    rope(s, e, e->q, m->n_heads, tokens);
    rope(s, e, e->k, m->n_kv_heads, tokens);
    k = e->kernels[K_KV_STORE];
    ARG_MEM(s, k, 0, e->k);
    ARG_MEM(s, k, 1, e->v);
    ARG_MEM(s, k, 2, d->pool);
    ARG_MEM(s, k, 3, e->tables);
    ARG_MEM(s, k, 4, e->table_start);
    ARG_MEM(s, k, 5, e->positions);
    ARG_INT(s, k, 6, e->options.block_tokens);
    ARG_INT(s, k, 7, m->n_kv_heads);
    ARG_INT(s, k, 8, l);
    run(s, k, (size_t)kv_dim, tokens, 0, "kv_store");
    k = e->kernels[K_ATTENTION];
    ARG_MEM(s, k, 0, e->q);
    ARG_MEM(s, k, 1, d->pool);
    ARG_MEM(s, k, 2, e->tables);
    ARG_MEM(s, k, 3, e->table_start);
    ARG_MEM(s, k, 4, e->positions);
    ARG_INT(s, k, 5, e->options.block_tokens);
    ARG_INT(s, k, 6, m->n_heads);
    ARG_INT(s, k, 7, m->n_kv_heads);
    ARG_INT(s, k, 8, l);
    ARG_FLOAT(s, k, 9, 1.0 / sqrt((double)m->head_dim));
    ARG_MEM(s, k, 10, e->attn);
    run(s, k, e->wg * (size_t)m->n_heads, tokens, e->wg, "attention");
    matmul(s, e, &w->wo, NULL, dim, q_dim, e->attn, e->x, 1, tokens);
    rms_norm(s, e, e->x, e->all_rows, &w->ffn_norm, e->h, tokens);
    matmul(s, e, &w->w_gate, NULL, ffn, dim, e->h, e->gate, 0, tokens);
    matmul(s, e, &w->w_up, NULL, ffn, dim, e->h, e->up, 0, tokens);
    k = e->kernels[K_SILU_GLU];
    ARG_MEM(s, k, 0, e->gate);
    ARG_MEM(s, k, 1, e->up);
    run(s, k, (size_t)(ffn * (int64_t)tokens), 1, 0, "silu_glu");
    matmul(s, e, &w->w_down, NULL, dim, ffn, e->gate, e->x, 1, tokens);
  }
  if (out_rows > 0) {
    rms_norm(s, e, e->x, e->out_rows, &e->output_norm, e->h, out_rows);
    matmul(s, e, &e->output, NULL, m->vocab_size, dim, e->h, e->logits, 0, out_rows);
  }
  if (argmax > 0) {
    k = e->kernels[K_ARGMAX];
    ARG_MEM(s, k, 0, e->logits);
    ARG_MEM(s, k, 1, e->argmax_rows);
    ARG_INT(s, k, 2, m->vocab_size);
    ARG_MEM(s, k, 3, e->ids);
    run(s, k, e->wg, argmax, e->wg, "argmax");
  }
  /* Only what was asked for comes back. */
  if (st.rc == CL_SUCCESS && rows > 0) {
    st.rc = clEnqueueReadBuffer(d->queue, e->logits, CL_FALSE, 0,
                                rows * (size_t)m->vocab_size * sizeof(float), output->logits, 0,
                                NULL, NULL);
    if (st.rc != CL_SUCCESS) st.what = "reading logits";
  }
  if (st.rc == CL_SUCCESS && argmax > 0) {
    st.rc = clEnqueueReadBuffer(d->queue, e->ids, CL_FALSE, 0, argmax * sizeof(int32_t),
                                output->argmax, 0, NULL, NULL);
    if (st.rc != CL_SUCCESS) st.what = "reading argmax";
  }
  /* Wait for everything enqueued, failed or not: host arrays stay in use
   * until then. */
  const cl_int finished = clFinish(d->queue);
  if (st.rc == CL_SUCCESS && finished != CL_SUCCESS) {
    st.rc = finished;
    st.what = "clFinish";
  }
  pthread_mutex_unlock(&d->mu);
  if (st.rc != CL_SUCCESS) return ocl_cl_failure(st.rc, st.what);
  output->device_time_ns = tmu_now_ns() - start;
  if (output->device_time_ns == 0) output->device_time_ns = 1;
  return NULL;
}

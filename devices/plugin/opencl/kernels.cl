/* The OpenCL plugin's kernels (OpenCL C 1.2), built once per executor with
 *   -DWG=n          work-group size of the reducing kernels (a power of 2)
 *   -DHEAD_DIM=n    the model's head dimension
 *   -DACC_N=n       ceil(HEAD_DIM / WG): head dimensions each work-item owns
 *   -DKV_HALF=0|1   KV pages hold f16 (1) or f32 (0) elements
 * Activations are f32 rows of one token each. Weights keep their GGUF
 * layout: f32, f16, or Q8_0 blocks of 34 bytes (f16 scale, 32 int8). f16 is
 * read and written with vload_half / vstore_half_rte, which need no
 * cl_khr_fp16. Every index a kernel dereferences was checked on the host.
 */

#define TYPE_F32 0
#define TYPE_F16 1
#define TYPE_Q8_0 8

#if KV_HALF
#define KV_T half
#define KV_LOAD(p, i) vload_half((i), (p))
#define KV_STORE(v, p, i) vstore_half_rte((v), (i), (p))
#else
#define KV_T float
#define KV_LOAD(p, i) ((p)[(i)])
#define KV_STORE(v, p, i) ((p)[(i)] = (v))
#endif

/* Element `i` of row `row` of a weight of `cols` columns, as f32. */
float weight_at(__global const uchar* w, int type, long row, long cols, long i) {
  if (type == TYPE_F32) return ((__global const float*)w)[row * cols + i];
  if (type == TYPE_F16) return vload_half(row * cols + i, (__global const half*)w);
  /* Q8_0 */
  __global const uchar* block = w + row * (cols / 32) * 34 + (i / 32) * 34;
  return vload_half(0, (__global const half*)block) * (float)((__global const char*)block)[2 + i % 32];
}

/* x[t] = token_embd[tokens[t]]; global (dim, tokens). */
__kernel void embed(__global const uchar* table, int type, int dim, __global const int* tokens,
                    __global float* x) {
  const int i = get_global_id(0), t = get_global_id(1);
  x[(long)t * dim + i] = weight_at(table, type, tokens[t], dim, i);
}

/* out[r] = rmsnorm(x[rows[r]]) * weight; global (WG, rows), local (WG, 1). */
__kernel void rms_norm(__global const float* x, __global const int* rows, __global const float* weight,
                       int dim, float eps, __global float* out) {
  __local float partial[WG];
  const int lid = get_local_id(0), r = get_global_id(1);
  __global const float* in = x + (long)rows[r] * dim;
  float sum = 0.0f;
  for (int i = lid; i < dim; i += WG) sum += in[i] * in[i];
  partial[lid] = sum;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int s = WG / 2; s > 0; s >>= 1) {
    if (lid < s) partial[lid] += partial[lid + s];
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  const float scale = rsqrt(partial[0] / (float)dim + eps);
  for (int i = lid; i < dim; i += WG) out[(long)r * dim + i] = in[i] * scale * weight[i];
}

/* y[t][r] = (accumulate ? y[t][r] : 0) + W[r] . x[t] (+ bias[r]) for the
 * `tokens` rows of x; W is rows x cols of `type`. A work-group takes one row
 * of W and TT tokens, so each weight read serves TT dot products.
 * global (WG * rows, ceil(tokens / TT)), local (WG, 1). */
#define TT 8
__kernel void matmul(__global const uchar* w, int type, int rows, int cols, __global const float* x,
                     int tokens, __global const float* bias, int accumulate, __global float* y) {
  __local float partial[TT][WG];
  const int lid = get_local_id(0), r = get_group_id(0), t0 = get_group_id(1) * TT;
  const int nt = min(TT, tokens - t0);
  __global const float* in = x + (long)t0 * cols;
  float sum[TT];
  for (int j = 0; j < TT; ++j) sum[j] = 0.0f;
  if (type == TYPE_F32) {
    __global const float* row = (__global const float*)w + (long)r * cols;
    for (int c = lid; c < cols; c += WG) {
      const float wv = row[c];
      for (int j = 0; j < nt; ++j) sum[j] += wv * in[(long)j * cols + c];
    }
  } else if (type == TYPE_F16) {
    __global const half* row = (__global const half*)w + (long)r * cols;
    for (int c = lid; c < cols; c += WG) {
      const float wv = vload_half(c, row);
      for (int j = 0; j < nt; ++j) sum[j] += wv * in[(long)j * cols + c];
    }
  } else { /* Q8_0: work-item lid takes blocks lid, lid + WG, ... */
    __global const uchar* row = w + (long)r * (cols / 32) * 34;
    for (int b = lid; b < cols / 32; b += WG) {
      __global const uchar* block = row + b * 34;
      __global const char* q = (__global const char*)(block + 2);
      const float d = vload_half(0, (__global const half*)block);
      for (int j = 0; j < nt; ++j) {
        __global const float* xb = in + (long)j * cols + b * 32;
        float dot = 0.0f;
        for (int i = 0; i < 32; ++i) dot += (float)q[i] * xb[i];
        sum[j] += d * dot;
      }
    }
  }
  for (int j = 0; j < TT; ++j) partial[j][lid] = sum[j];
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int s = WG / 2; s > 0; s >>= 1) {
    if (lid < s) {
      for (int j = 0; j < TT; ++j) partial[j][lid] += partial[j][lid + s];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (lid < nt) {
    const float value = partial[lid][0] + (bias != 0 ? bias[r] : 0.0f);
    __global float* out = y + (long)(t0 + lid) * rows + r;
    *out = accumulate ? *out + value : value;
  }
}

/* Rotates `heads` heads of each token row (stride floats apart) by its
 * position; pair i of a head is (2i, 2i+1) when adjacent, else (i, i + half).
 * global (heads * HEAD_DIM / 2, tokens). */
__kernel void rope(__global float* x, int heads, int stride, __global const int* positions,
                   __global const float* inv_freq, int adjacent) {
  const int half_dim = HEAD_DIM / 2;
  const int g = get_global_id(0), t = get_global_id(1);
  const int h = g / half_dim, i = g % half_dim;
  __global float* head = x + (long)t * stride + h * HEAD_DIM;
  const int a = adjacent ? 2 * i : i, b = adjacent ? 2 * i + 1 : i + half_dim;
  const float angle = (float)positions[t] * inv_freq[i];
  const float c = cos(angle), s = sin(angle);
  const float x0 = head[a], x1 = head[b];
  head[a] = x0 * c - x1 * s;
  head[b] = x0 * s + x1 * c;
}

/* Element offset in the KV pool of (layer, kv, head, position) for a
 * sequence whose block table (element offsets of its blocks) is `table`. */
long kv_index(__global const ulong* table, int block_tokens, int kv_heads, int layer, int kv, int head,
              int pos) {
  return (long)table[pos / block_tokens] +
         ((long)((layer * 2 + kv) * kv_heads + head) * block_tokens + pos % block_tokens) * HEAD_DIM;
}

/* Writes each token's K and V rows into its block; global (kv_heads *
 * HEAD_DIM, tokens). table_start[t]: where the token's sequence's table
 * begins in `tables`. */
__kernel void kv_store(__global const float* k, __global const float* v, __global KV_T* pool,
                       __global const ulong* tables, __global const int* table_start,
                       __global const int* positions, int block_tokens, int kv_heads, int layer) {
  const int g = get_global_id(0), t = get_global_id(1);
  const int h = g / HEAD_DIM, d = g % HEAD_DIM, kv_dim = kv_heads * HEAD_DIM;
  __global const ulong* table = tables + table_start[t];
  const int pos = positions[t];
  KV_STORE(k[(long)t * kv_dim + g], pool, kv_index(table, block_tokens, kv_heads, layer, 0, h, pos) + d);
  KV_STORE(v[(long)t * kv_dim + g], pool, kv_index(table, block_tokens, kv_heads, layer, 1, h, pos) + d);
}

/* Causal grouped-query attention of one token's query head over the cached
 * positions [0, pos], with an online softmax over chunks of WG positions.
 * global (WG * heads, tokens), local (WG, 1). */
__kernel void attention(__global const float* q, __global const KV_T* pool,
                        __global const ulong* tables, __global const int* table_start,
                        __global const int* positions, int block_tokens, int heads, int kv_heads,
                        int layer, float scale, __global float* out) {
  __local float qs[HEAD_DIM];
  __local float weights[WG];
  const int lid = get_local_id(0), h = get_group_id(0), t = get_global_id(1);
  const int kvh = h / (heads / kv_heads), pos = positions[t];
  __global const ulong* table = tables + table_start[t];
  for (int d = lid; d < HEAD_DIM; d += WG) qs[d] = q[((long)t * heads + h) * HEAD_DIM + d] * scale;
  barrier(CLK_LOCAL_MEM_FENCE);
  float max_so_far = -INFINITY, denominator = 0.0f, acc[ACC_N];
  for (int k = 0; k < ACC_N; ++k) acc[k] = 0.0f;
  for (int base = 0; base <= pos; base += WG) {
    const int p = base + lid, n = min(WG, pos + 1 - base);
    float score = -INFINITY;
    if (p <= pos) {
      __global const KV_T* key = pool + kv_index(table, block_tokens, kv_heads, layer, 0, kvh, p);
      score = 0.0f;
      for (int d = 0; d < HEAD_DIM; ++d) score += qs[d] * KV_LOAD(key, d);
    }
    weights[lid] = score;
    barrier(CLK_LOCAL_MEM_FENCE);
    float chunk_max = weights[0];
    for (int j = 1; j < n; ++j) chunk_max = fmax(chunk_max, weights[j]);
    const float new_max = fmax(max_so_far, chunk_max);
    const float correction = exp(max_so_far - new_max);
    barrier(CLK_LOCAL_MEM_FENCE);
    weights[lid] = p <= pos ? exp(score - new_max) : 0.0f;
    barrier(CLK_LOCAL_MEM_FENCE);
    float chunk_sum = 0.0f;
    for (int j = 0; j < n; ++j) chunk_sum += weights[j];
    denominator = denominator * correction + chunk_sum;
    for (int k = 0; k < ACC_N; ++k) {
      const int d = lid + k * WG;
      if (d >= HEAD_DIM) break;
      float sum = 0.0f;
      for (int j = 0; j < n; ++j) {
        __global const KV_T* value =
            pool + kv_index(table, block_tokens, kv_heads, layer, 1, kvh, base + j);
        sum += weights[j] * KV_LOAD(value, d);
      }
      acc[k] = acc[k] * correction + sum;
    }
    max_so_far = new_max;
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  for (int k = 0; k < ACC_N; ++k) {
    const int d = lid + k * WG;
    if (d < HEAD_DIM) out[((long)t * heads + h) * HEAD_DIM + d] = acc[k] / denominator;
  }
}

/* gate = silu(gate) * up; global (n). */
__kernel void silu_glu(__global float* gate, __global const float* up) {
  const long i = get_global_id(0);
  const float g = gate[i];
  gate[i] = g / (1.0f + exp(-g)) * up[i];
}

/* ids[a] = index of the largest of logits row rows[a] (lowest on ties, NaN
 * ignored, 0 when all NaN); global (WG, count), local (WG, 1). */
__kernel void argmax(__global const float* logits, __global const int* rows, int vocab,
                     __global int* ids) {
  __local float best_value[WG];
  __local int best_index[WG];
  const int lid = get_local_id(0), a = get_global_id(1);
  __global const float* row = logits + (long)rows[a] * vocab;
  float value = 0.0f;
  int index = -1;
  for (int i = lid; i < vocab; i += WG) {
    const float v = row[i];
    if (isnan(v)) continue;
    if (index < 0 || v > value) {
      value = v;
      index = i;
    }
  }
  best_value[lid] = value;
  best_index[lid] = index;
  barrier(CLK_LOCAL_MEM_FENCE);
  for (int s = WG / 2; s > 0; s >>= 1) {
    if (lid < s) {
      const int oi = best_index[lid + s];
      const float ov = best_value[lid + s];
      const int mi = best_index[lid];
      if (oi >= 0 && (mi < 0 || ov > best_value[lid] || (ov == best_value[lid] && oi < mi))) {
        best_value[lid] = ov;
        best_index[lid] = oi;
      }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
  }
  if (lid == 0) ids[a] = best_index[0] < 0 ? 0 : best_index[0];
}

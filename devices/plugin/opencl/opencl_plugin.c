/* The OpenCL device plugin: every OpenCL device of every platform the ICD
 * loader finds is one tokenmill device "opencl:N". Weights live in device
 * buffers uploaded from the daemon's host pointers, KV pages in one device
 * buffer per device (the "KV pool"), and the Llama-family forward runs as
 * OpenCL C kernels (kernels.cl) built once per executor with clBuildProgram.
 * Logits cross back to the host only for the rows a step asks for; argmax
 * runs on the device. It includes only the public header and OpenCL's.
 *
 * KV addresses: the ABI wants a region base such that page k is base + k x
 * page_bytes. OpenCL buffers have no such addresses, so a region is a byte
 * range of the device's pool and its "address" is a handle, KV_HANDLE_BASE
 * plus the range's offset; kernels take the pool and element offsets. The
 * pool grows (a new buffer, the old content copied) when a region does not
 * fit, up to CL_DEVICE_MAX_MEM_ALLOC_SIZE, under the device's lock, which
 * executor_forward also holds.
 */
#define _POSIX_C_SOURCE 200809L
#define CL_TARGET_OPENCL_VERSION 120

#include <CL/cl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "opencl_kernels.h" /* generated: opencl_kernels_source[] from kernels.cl */
#include "tokenmill_device.h"

#define KV_HANDLE_BASE ((uint64_t)1 << 40) /* region handles: base + pool offset */
#define REGION_ALIGN 256u
#define MAX_WG 64
#define MATMUL_TOKENS 8 /* TT in kernels.cl: tokens per matmul work-group */

/* ------------------------------------------------------------------ */
/* Errors                                                              */

struct tm_error {
  tm_status_code code;
  int is_static;
  char message[1024];
};

static struct tm_error out_of_memory_error = {TM_RESOURCE_EXHAUSTED, 1,
                                              "opencl plugin: out of host memory"};

static tm_error* make_error(tm_status_code code, const char* format, ...) {
  tm_error* e = (tm_error*)malloc(sizeof(tm_error));
  if (e == NULL) return &out_of_memory_error;
  e->code = code;
  e->is_static = 0;
  va_list args;
  va_start(args, format);
  vsnprintf(e->message, sizeof(e->message), format, args);
  va_end(args);
  return e;
}

static tm_status_code error_code(const tm_error* e) { return e->code; }
static const char* error_message(const tm_error* e) { return e->message; }
static void error_destroy(tm_error* e) {
  if (e != NULL && !e->is_static) free(e);
}

static tm_error* cl_failure(cl_int rc, const char* what) {
  const tm_status_code code = rc == CL_MEM_OBJECT_ALLOCATION_FAILURE || rc == CL_OUT_OF_RESOURCES
                                  ? TM_RESOURCE_EXHAUSTED
                                  : TM_INTERNAL;
  return make_error(code, "opencl plugin: %s failed (OpenCL error %d)", what, (int)rc);
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* Plugin and devices                                                  */

typedef struct kv_region {
  uint64_t offset, bytes;
} kv_region;

enum {
  PROP_PLATFORM,
  PROP_PLATFORM_VERSION,
  PROP_DEVICE,
  PROP_VENDOR,
  PROP_DRIVER,
  PROP_OPENCL_C,
  PROP_COMPUTE_UNITS,
  PROP_GLOBAL_MEMORY,
  PROP_MAX_ALLOC,
  PROP_COUNT
};

typedef struct ocl_device {
  cl_device_id id;
  cl_context context;
  cl_command_queue queue;
  char text[PROP_COUNT][256];
  tm_property properties[PROP_COUNT];
  uint64_t global_memory, max_alloc;
  size_t max_work_group;
  /* Guarded by mu: the KV pool, its regions, the bytes in use, the queue. */
  pthread_mutex_t mu;
  cl_mem pool;
  uint64_t pool_bytes;
  kv_region* regions; /* sorted by offset */
  size_t region_count, region_capacity;
  uint64_t used_bytes; /* KV regions, executors' weights and activations */
} ocl_device;

struct tm_plugin {
  tm_plugin_options options;
  ocl_device* devices;
  uint32_t count;
};

static void plugin_log(const tm_plugin* p, int level, const char* format, ...) {
  if (p->options.log == NULL) return;
  char line[1024];
  va_list args;
  va_start(args, format);
  vsnprintf(line, sizeof(line), format, args);
  va_end(args);
  p->options.log(p->options.log_user, level, line);
}

static void device_text(ocl_device* d, int prop, const char* key, const char* value) {
  snprintf(d->text[prop], sizeof(d->text[prop]), "%s", value);
  d->properties[prop].key = key;
  d->properties[prop].value = d->text[prop];
}

static void device_string(ocl_device* d, int prop, const char* key, cl_device_info what) {
  char value[256] = "";
  clGetDeviceInfo(d->id, what, sizeof(value) - 1, value, NULL);
  device_text(d, prop, key, value);
}

static void release_device(ocl_device* d) {
  if (d->pool != NULL) clReleaseMemObject(d->pool);
  if (d->queue != NULL) clReleaseCommandQueue(d->queue);
  if (d->context != NULL) clReleaseContext(d->context);
  free(d->regions);
  pthread_mutex_destroy(&d->mu);
}

/* Fills *d for one OpenCL device; an error leaves nothing to release. */
static tm_error* open_device(cl_platform_id platform, cl_device_id id, ocl_device* d) {
  memset(d, 0, sizeof(*d));
  d->id = id;
  cl_int rc;
  d->context = clCreateContext(NULL, 1, &id, NULL, NULL, &rc);
  if (rc != CL_SUCCESS) return cl_failure(rc, "clCreateContext");
  d->queue = clCreateCommandQueue(d->context, id, 0, &rc);
  if (rc != CL_SUCCESS) {
    clReleaseContext(d->context);
    return cl_failure(rc, "clCreateCommandQueue");
  }
  pthread_mutex_init(&d->mu, NULL);
  char value[256] = "";
  clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof(value) - 1, value, NULL);
  device_text(d, PROP_PLATFORM, "platform", value);
  memset(value, 0, sizeof(value));
  clGetPlatformInfo(platform, CL_PLATFORM_VERSION, sizeof(value) - 1, value, NULL);
  device_text(d, PROP_PLATFORM_VERSION, "platform_version", value);
  device_string(d, PROP_DEVICE, "device_name", CL_DEVICE_NAME);
  device_string(d, PROP_VENDOR, "device_vendor", CL_DEVICE_VENDOR);
  device_string(d, PROP_DRIVER, "driver_version", CL_DRIVER_VERSION);
  device_string(d, PROP_OPENCL_C, "opencl_c_version", CL_DEVICE_OPENCL_C_VERSION);
  cl_uint units = 0;
  cl_ulong global = 0, max_alloc = 0;
  size_t max_wg = 1;
  clGetDeviceInfo(id, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof(units), &units, NULL);
  clGetDeviceInfo(id, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof(global), &global, NULL);
  clGetDeviceInfo(id, CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof(max_alloc), &max_alloc, NULL);
  clGetDeviceInfo(id, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof(max_wg), &max_wg, NULL);
  d->global_memory = global;
  d->max_alloc = max_alloc;
  d->max_work_group = max_wg;
  snprintf(value, sizeof(value), "%u", (unsigned)units);
  device_text(d, PROP_COMPUTE_UNITS, "compute_units", value);
  snprintf(value, sizeof(value), "%llu", (unsigned long long)global);
  device_text(d, PROP_GLOBAL_MEMORY, "global_memory_bytes", value);
  snprintf(value, sizeof(value), "%llu", (unsigned long long)max_alloc);
  device_text(d, PROP_MAX_ALLOC, "max_buffer_bytes", value);
  return NULL;
}

static void plugin_destroy(tm_plugin* p) {
  if (p == NULL) return;
  uint32_t i;
  for (i = 0; i < p->count; ++i) release_device(&p->devices[i]);
  free(p->devices);
  free(p);
}

static tm_error* plugin_create(const tm_plugin_options* options, tm_plugin** out) {
  tm_plugin* p = (tm_plugin*)calloc(1, sizeof(tm_plugin));
  if (p == NULL) return make_error(TM_RESOURCE_EXHAUSTED, "opencl plugin: out of memory");
  if (options != NULL) {
    size_t n =
        options->struct_size < sizeof(p->options) ? options->struct_size : sizeof(p->options);
    memcpy(&p->options, options, n);
  }
  cl_uint platform_count = 0;
  cl_int rc = clGetPlatformIDs(0, NULL, &platform_count);
  if (rc != CL_SUCCESS || platform_count == 0) {
    /* -1001 (no ICD installed) is a machine without OpenCL: no devices. */
    plugin_log(p, TM_LOG_INFO, "opencl plugin: no OpenCL platform (clGetPlatformIDs: %d)", (int)rc);
    *out = p;
    return NULL;
  }
  cl_platform_id* platforms = (cl_platform_id*)calloc(platform_count, sizeof(cl_platform_id));
  if (platforms == NULL) {
    free(p);
    return make_error(TM_RESOURCE_EXHAUSTED, "opencl plugin: out of memory");
  }
  clGetPlatformIDs(platform_count, platforms, NULL);
  tm_error* err = NULL;
  cl_uint i, j;
  for (i = 0; i < platform_count && err == NULL; ++i) {
    cl_uint n = 0;
    if (clGetDeviceIDs(platforms[i], CL_DEVICE_TYPE_ALL, 0, NULL, &n) != CL_SUCCESS || n == 0) {
      continue;
    }
    cl_device_id* ids = (cl_device_id*)calloc(n, sizeof(cl_device_id));
    ocl_device* grown =
        (ocl_device*)realloc(p->devices, (size_t)(p->count + n) * sizeof(ocl_device));
    if (ids == NULL || grown == NULL) {
      free(ids);
      if (grown != NULL) p->devices = grown;
      err = make_error(TM_RESOURCE_EXHAUSTED, "opencl plugin: out of memory");
      break;
    }
    p->devices = grown;
    clGetDeviceIDs(platforms[i], CL_DEVICE_TYPE_ALL, n, ids, NULL);
    for (j = 0; j < n; ++j) {
      /* A device that cannot be opened is left out; the others serve. */
      tm_error* skipped = open_device(platforms[i], ids[j], &p->devices[p->count]);
      if (skipped == NULL) {
        ++p->count;
      } else {
        plugin_log(p, TM_LOG_WARN, "opencl plugin: leaving a device of platform %u out: %s", i,
                   skipped->message);
        error_destroy(skipped);
      }
    }
    free(ids);
  }
  free(platforms);
  if (err != NULL) {
    plugin_destroy(p);
    return err;
  }
  for (i = 0; i < p->count; ++i) {
    plugin_log(p, TM_LOG_INFO, "opencl plugin: opencl:%u is %s (%s, %s compute units)", i,
               p->devices[i].text[PROP_DEVICE], p->devices[i].text[PROP_PLATFORM],
               p->devices[i].text[PROP_COMPUTE_UNITS]);
  }
  *out = p;
  return NULL;
}

static uint32_t device_count(const tm_plugin* p) { return p->count; }

/* Writes the fields of `src` that dst->struct_size covers. */
#define TM_COPY_SIZED(dst, src)                                                         \
  do {                                                                                  \
    size_t size_ = (dst)->struct_size < sizeof(src) ? (dst)->struct_size : sizeof(src); \
    (src).struct_size = size_;                                                          \
    memcpy((dst), &(src), size_);                                                       \
  } while (0)

static tm_error* no_device(uint32_t device) {
  return make_error(TM_NOT_FOUND, "opencl plugin: no device %u", device);
}

static tm_error* device_info(const tm_plugin* p, uint32_t device, tm_device_info* info) {
  if (device >= p->count) return no_device(device);
  const ocl_device* d = &p->devices[device];
  tm_device_info full;
  memset(&full, 0, sizeof(full));
  full.name = d->text[PROP_DEVICE];
  full.memory_total_bytes = d->global_memory;
  full.properties = d->properties;
  full.property_count = PROP_COUNT;
  full.weight_types = (1ull << TM_TENSOR_F32) | (1ull << TM_TENSOR_F16) | (1ull << TM_TENSOR_Q8_0);
  full.kv_types = (1u << TM_KV_F16) | (1u << TM_KV_F32);
  full.architectures = (1u << TM_ARCH_LLAMA) | (1u << TM_ARCH_QWEN2);
  full.max_block_tokens = 0;
  TM_COPY_SIZED(info, full);
  return NULL;
}

static tm_error* device_sample(tm_plugin* p, uint32_t device, tm_device_sample* sample) {
  if (device >= p->count) return no_device(device);
  ocl_device* d = &p->devices[device];
  tm_device_sample full;
  memset(&full, 0, sizeof(full));
  pthread_mutex_lock(&d->mu);
  full.memory_used_bytes = d->used_bytes;
  pthread_mutex_unlock(&d->mu);
  full.present = TM_SAMPLE_MEMORY_USED; /* OpenCL 1.2 reports nothing else */
  full.memory_total_bytes = d->global_memory;
  TM_COPY_SIZED(sample, full);
  return NULL;
}

/* Makes the pool at least `bytes` long, keeping its content. d->mu held. */
static tm_error* grow_pool(ocl_device* d, uint64_t bytes) {
  if (bytes <= d->pool_bytes) return NULL;
  uint64_t capacity = d->pool_bytes + d->pool_bytes / 2;
  if (capacity < bytes) capacity = bytes;
  if (capacity > d->max_alloc) capacity = d->max_alloc;
  if (capacity < bytes) {
    return make_error(TM_RESOURCE_EXHAUSTED,
                      "opencl plugin: KV pool of %llu bytes would pass the device's largest "
                      "buffer (%llu bytes)",
                      (unsigned long long)bytes, (unsigned long long)d->max_alloc);
  }
  cl_int rc;
  cl_mem grown = clCreateBuffer(d->context, CL_MEM_READ_WRITE, (size_t)capacity, NULL, &rc);
  if (rc != CL_SUCCESS) return cl_failure(rc, "clCreateBuffer (KV pool)");
  if (d->pool != NULL) {
    rc = clEnqueueCopyBuffer(d->queue, d->pool, grown, 0, 0, (size_t)d->pool_bytes, 0, NULL, NULL);
    if (rc == CL_SUCCESS) rc = clFinish(d->queue);
    if (rc != CL_SUCCESS) {
      clReleaseMemObject(grown);
      return cl_failure(rc, "copying the KV pool");
    }
    clReleaseMemObject(d->pool);
  }
  d->pool = grown;
  d->pool_bytes = capacity;
  return NULL;
}

static tm_error* kv_region_alloc(tm_plugin* p, uint32_t device, uint64_t bytes, void** base) {
  if (device >= p->count) return no_device(device);
  if (bytes == 0) return make_error(TM_INVALID_ARGUMENT, "opencl plugin: empty KV region");
  ocl_device* d = &p->devices[device];
  const uint64_t size = (bytes + REGION_ALIGN - 1) / REGION_ALIGN * REGION_ALIGN;
  tm_error* err = NULL;
  pthread_mutex_lock(&d->mu);
  /* First fit between the sorted regions, else after the last. */
  uint64_t offset = 0;
  size_t at = 0;
  while (at < d->region_count && d->regions[at].offset < offset + size) {
    offset = d->regions[at].offset + d->regions[at].bytes;
    ++at;
  }
  if (d->region_count == d->region_capacity) {
    const size_t capacity = d->region_capacity ? 2 * d->region_capacity : 16;
    kv_region* grown = (kv_region*)realloc(d->regions, capacity * sizeof(kv_region));
    if (grown == NULL) {
      err = make_error(TM_RESOURCE_EXHAUSTED, "opencl plugin: out of memory");
    } else {
      d->regions = grown;
      d->region_capacity = capacity;
    }
  }
  if (err == NULL) err = grow_pool(d, offset + size);
  if (err == NULL) {
    memmove(&d->regions[at + 1], &d->regions[at], (d->region_count - at) * sizeof(kv_region));
    d->regions[at].offset = offset;
    d->regions[at].bytes = size;
    ++d->region_count;
    d->used_bytes += size;
    *base = (void*)(uintptr_t)(KV_HANDLE_BASE + offset);
  }
  pthread_mutex_unlock(&d->mu);
  return err;
}

static void kv_region_free(tm_plugin* p, uint32_t device, void* base, uint64_t bytes) {
  (void)bytes;
  if (device >= p->count) return;
  ocl_device* d = &p->devices[device];
  const uint64_t offset = (uint64_t)(uintptr_t)base - KV_HANDLE_BASE;
  size_t i;
  pthread_mutex_lock(&d->mu);
  for (i = 0; i < d->region_count; ++i) {
    if (d->regions[i].offset != offset) continue;
    d->used_bytes -= d->regions[i].bytes;
    memmove(&d->regions[i], &d->regions[i + 1], (d->region_count - i - 1) * sizeof(kv_region));
    --d->region_count;
    break;
  }
  if (d->region_count == 0 && d->pool != NULL) { /* nothing left: give the memory back */
    clReleaseMemObject(d->pool);
    d->pool = NULL;
    d->pool_bytes = 0;
  }
  pthread_mutex_unlock(&d->mu);
}

/* The pool offset of a page handle, or UINT64_MAX when no live region holds
 * [page, page + bytes). d->mu held. */
static uint64_t page_offset(const ocl_device* d, const void* page, uint64_t bytes) {
  const uint64_t handle = (uint64_t)(uintptr_t)page;
  if (handle < KV_HANDLE_BASE) return UINT64_MAX;
  const uint64_t offset = handle - KV_HANDLE_BASE;
  size_t i;
  for (i = 0; i < d->region_count; ++i) {
    const kv_region* r = &d->regions[i];
    if (offset >= r->offset && offset + bytes <= r->offset + r->bytes) return offset;
  }
  return UINT64_MAX;
}

/* ------------------------------------------------------------------ */
/* Executors                                                           */

typedef struct weight {
  cl_mem buffer; /* NULL when absent (an optional tensor) */
  uint32_t type;
} weight;

typedef struct layer_weights {
  weight attn_norm, wq, wk, wv, bq, bk, bv, wo, ffn_norm, w_gate, w_up, w_down;
} layer_weights;

enum {
  K_EMBED,
  K_RMS_NORM,
  K_MATMUL,
  K_ROPE,
  K_KV_STORE,
  K_ATTENTION,
  K_SILU_GLU,
  K_ARGMAX,
  KERNEL_COUNT
};
static const char* const kernel_names[KERNEL_COUNT] = {
    "embed", "rms_norm", "matmul", "rope", "kv_store", "attention", "silu_glu", "argmax"};

struct tm_executor {
  tm_plugin* plugin;
  ocl_device* device;
  tm_model hp;
  tm_executor_options options;
  size_t element_bytes, block_bytes, wg;
  uint32_t slot_count;
  uint64_t* slots;       /* pool byte offset of each slot's page; UINT64_MAX = unmapped */
  uint64_t device_bytes; /* weights and activations, counted in used_bytes */
  cl_program program;
  cl_kernel kernels[KERNEL_COUNT];
  weight embedding, output_norm, output;
  layer_weights* layers;
  cl_mem inv_freq;
  /* Activations for max_batch_tokens tokens. */
  cl_mem x, h, q, k, v, attn, gate, up;
  /* Logits of the rows a step wants, grown on demand: sized for every token
   * of a full batch they could take gigabytes with a large vocabulary. */
  cl_mem logits;
  size_t logits_rows;
  /* Step inputs: token ids, positions, table starts, identity rows, logits
   * rows, argmax rows, block tables (grown on demand), argmax ids. */
  cl_mem tokens, positions, table_start, all_rows, out_rows, argmax_rows, tables, ids;
  size_t tables_capacity;
  int32_t *host_tokens, *host_positions, *host_table_start, *host_out_rows, *host_argmax_rows;
  uint64_t* host_tables;
  size_t host_tables_capacity;
};

static void release_weight(weight* w) {
  if (w->buffer != NULL) clReleaseMemObject(w->buffer);
  w->buffer = NULL;
}

static void release_mem(cl_mem* m) {
  if (*m != NULL) clReleaseMemObject(*m);
  *m = NULL;
}

static void executor_destroy(tm_executor* e) {
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
  for (j = 0; j < sizeof(buffers) / sizeof(buffers[0]); ++j) release_mem(buffers[j]);
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

static const tm_tensor* find_tensor(const tm_model* m, const char* name) {
  size_t i;
  for (i = 0; i < m->tensor_count; ++i) {
    if (m->tensors[i].name != NULL && strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
  }
  return NULL;
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
  const tm_tensor* t = find_tensor(m, name);
  if (t == NULL) {
    if (optional) return NULL;
    return make_error(TM_INVALID_ARGUMENT, "opencl plugin: tensor %s missing", name);
  }
  const int want_dims = rows == 0 ? 1 : 2;
  if ((int)t->n_dims != want_dims || (rows != 0 && t->shape[0] != rows) ||
      t->shape[want_dims - 1] != cols) {
    return make_error(TM_INVALID_ARGUMENT, "opencl plugin: tensor %s has the wrong shape", name);
  }
  if (rows == 0 && t->type != TM_TENSOR_F32) {
    return make_error(TM_UNIMPLEMENTED, "opencl plugin: tensor %s must be f32", name);
  }
  if (t->type != TM_TENSOR_F32 && t->type != TM_TENSOR_F16 && t->type != TM_TENSOR_Q8_0) {
    return make_error(TM_UNIMPLEMENTED, "opencl plugin: tensor %s has type %u (F32, F16, Q8_0 run)",
                      name, t->type);
  }
  if (t->type == TM_TENSOR_Q8_0 && cols % 32 != 0) {
    return make_error(TM_INVALID_ARGUMENT, "opencl plugin: Q8_0 tensor %s has %lld columns", name,
                      (long long)cols);
  }
  const uint64_t bytes = row_bytes(t->type, cols) * (uint64_t)(rows == 0 ? 1 : rows);
  if (t->data == NULL || t->bytes < bytes) {
    return make_error(TM_INVALID_ARGUMENT, "opencl plugin: tensor %s holds %llu bytes, needs %llu",
                      name, (unsigned long long)t->bytes, (unsigned long long)bytes);
  }
  cl_int rc;
  dst->buffer = clCreateBuffer(e->device->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                               (size_t)bytes, (void*)t->data, &rc);
  if (rc != CL_SUCCESS) return cl_failure(rc, "uploading a weight");
  dst->type = t->type;
  e->device_bytes += bytes;
  return NULL;
}

static void inverse_frequencies(const tm_model* m, const float* freq_factors, float* inv_freq) {
  const int32_t half = m->head_dim / 2;
  const double scaled_above = m->rope_original_context / (double)m->rope_low_freq_factor;
  const double kept_below = m->rope_original_context / (double)m->rope_high_freq_factor;
  int32_t i;
  for (i = 0; i < half; ++i) {
    double inv = exp(-2.0 * i / m->head_dim * log((double)m->rope_theta));
    if (freq_factors != NULL) {
      inv /= freq_factors[i];
    } else if (m->rope_scaling_factor > 0.0f) {
      const double wavelength = 2.0 * 3.14159265358979323846 / inv;
      if (wavelength > scaled_above) {
        inv /= m->rope_scaling_factor;
      } else if (wavelength >= kept_below) {
        const double smooth = (m->rope_original_context / wavelength - m->rope_low_freq_factor) /
                              ((double)m->rope_high_freq_factor - m->rope_low_freq_factor);
        inv = (1.0 - smooth) * inv / m->rope_scaling_factor + smooth * inv;
      }
    }
    inv_freq[i] = (float)inv;
  }
}

/* Builds the kernels: one program per executor; the build log goes to the
 * daemon's log and into the error on failure. */
static tm_error* build_program(tm_executor* e) {
  cl_int rc;
  const char* source = opencl_kernels_source;
  e->program = clCreateProgramWithSource(e->device->context, 1, &source, NULL, &rc);
  if (rc != CL_SUCCESS) return cl_failure(rc, "clCreateProgramWithSource");
  char flags[256];
  snprintf(flags, sizeof(flags), "-cl-std=CL1.2 -DWG=%d -DHEAD_DIM=%d -DACC_N=%d -DKV_HALF=%d",
           (int)e->wg, (int)e->hp.head_dim, (int)((e->hp.head_dim + (int)e->wg - 1) / (int)e->wg),
           e->options.kv_type == TM_KV_F16 ? 1 : 0);
  rc = clBuildProgram(e->program, 1, &e->device->id, flags, NULL, NULL);
  if (rc != CL_SUCCESS) {
    char log[768] = "";
    clGetProgramBuildInfo(e->program, e->device->id, CL_PROGRAM_BUILD_LOG, sizeof(log) - 1, log,
                          NULL);
    plugin_log(e->plugin, TM_LOG_ERROR, "opencl plugin: kernel build failed (%d): %s", (int)rc,
               log);
    return make_error(TM_INTERNAL, "opencl plugin: kernel build failed (OpenCL error %d): %s",
                      (int)rc, log);
  }
  int i;
  for (i = 0; i < KERNEL_COUNT; ++i) {
    e->kernels[i] = clCreateKernel(e->program, kernel_names[i], &rc);
    if (rc != CL_SUCCESS) return cl_failure(rc, kernel_names[i]);
  }
  return NULL;
}

static tm_error* scratch(tm_executor* e, cl_mem* m, size_t bytes) {
  cl_int rc;
  *m = clCreateBuffer(e->device->context, CL_MEM_READ_WRITE, bytes > 0 ? bytes : 4, NULL, &rc);
  if (rc != CL_SUCCESS) return cl_failure(rc, "clCreateBuffer (activations)");
  e->device_bytes += bytes;
  return NULL;
}

static tm_error* executor_create(tm_plugin* p, uint32_t device, const tm_model* model,
                                 const tm_executor_options* options, tm_executor** out) {
  if (device >= p->count) return no_device(device);
  if (model == NULL || options == NULL || model->struct_size < sizeof(tm_model) ||
      options->struct_size < sizeof(tm_executor_options)) {
    return make_error(TM_INVALID_ARGUMENT, "opencl plugin: model or options missing or too old");
  }
  const tm_model* m = model;
  if (m->architecture != TM_ARCH_LLAMA && m->architecture != TM_ARCH_QWEN2) {
    return make_error(TM_UNIMPLEMENTED, "opencl plugin: architecture %u not supported",
                      m->architecture);
  }
  if (m->rope_style != TM_ROPE_ADJACENT_PAIRS && m->rope_style != TM_ROPE_HALVES) {
    return make_error(TM_UNIMPLEMENTED, "opencl plugin: RoPE style %u not supported",
                      m->rope_style);
  }
  if (m->dim <= 0 || m->n_layers <= 0 || m->n_heads <= 0 || m->n_kv_heads <= 0 ||
      m->head_dim <= 0 || m->head_dim % 2 != 0 || m->head_dim > 1024 || m->ffn_dim <= 0 ||
      m->vocab_size <= 0 || m->context_length <= 0 || m->n_heads % m->n_kv_heads != 0) {
    return make_error(TM_INVALID_ARGUMENT, "opencl plugin: bad hyperparameters");
  }
  if (options->block_tokens < 1 ||
      (options->kv_type != TM_KV_F16 && options->kv_type != TM_KV_F32) ||
      options->blocks_per_page < 1 || options->kv_blocks % options->blocks_per_page != 0 ||
      options->max_batch_tokens < 1 || options->page_bytes % 4 != 0) {
    return make_error(TM_INVALID_ARGUMENT, "opencl plugin: bad executor options");
  }
  tm_executor* e = (tm_executor*)calloc(1, sizeof(tm_executor));
  if (e == NULL) return make_error(TM_RESOURCE_EXHAUSTED, "opencl plugin: out of memory");
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
    return make_error(TM_UNIMPLEMENTED, "opencl plugin: work-groups of %zu items are too small",
                      p->devices[device].max_work_group);
  }
  if (e->block_bytes * options->blocks_per_page > options->page_bytes) {
    free(e);
    return make_error(TM_INVALID_ARGUMENT, "opencl plugin: %u blocks do not fit a page",
                      options->blocks_per_page);
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
    const tm_tensor* output = find_tensor(m, "output.weight");
    const tm_tensor* embd = find_tensor(m, "token_embd.weight");
    if (output != NULL && embd != NULL && output->data == embd->data &&
        output->type == embd->type) {
      e->output = e->embedding; /* tied */
    } else {
      UPLOAD("output.weight", m->vocab_size, dim, 0, &e->output);
    }
  }
  e->layers =
      err == NULL ? (layer_weights*)calloc((size_t)m->n_layers, sizeof(layer_weights)) : NULL;
  if (err == NULL && e->layers == NULL) err = make_error(TM_RESOURCE_EXHAUSTED, "out of memory");
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
    const tm_tensor* f = find_tensor(m, "rope_freqs.weight");
    if (f != NULL && (f->type != TM_TENSOR_F32 || f->n_dims != 1 || f->shape[0] != half ||
                      f->data == NULL || f->bytes < (uint64_t)half * sizeof(float))) {
      err = make_error(TM_INVALID_ARGUMENT, "opencl plugin: rope_freqs.weight is not f32 {%d}",
                       (int)half);
    } else if (f != NULL) {
      factors = (float*)malloc((size_t)half * sizeof(float));
      if (factors != NULL) memcpy(factors, f->data, (size_t)half * sizeof(float));
    }
    if (err == NULL && (inv == NULL || (f != NULL && factors == NULL))) {
      err = make_error(TM_RESOURCE_EXHAUSTED, "opencl plugin: out of memory");
    }
    if (err == NULL) {
      inverse_frequencies(m, factors, inv);
      cl_int rc;
      e->inv_freq = clCreateBuffer(e->device->context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                   (size_t)half * sizeof(float), inv, &rc);
      if (rc != CL_SUCCESS) err = cl_failure(rc, "uploading RoPE frequencies");
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
      err = make_error(TM_RESOURCE_EXHAUSTED, "opencl plugin: out of memory");
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
    if (rc != CL_SUCCESS) err = cl_failure(rc, "clCreateBuffer (rows)");
    e->device_bytes += tokens * 4;
  }
  pthread_mutex_lock(&e->device->mu);
  e->device->used_bytes += e->device_bytes;
  pthread_mutex_unlock(&e->device->mu);
  if (err != NULL) {
    executor_destroy(e);
    return err;
  }
  *out = e;
  return NULL;
}

static tm_error* executor_map_page(tm_executor* e, uint32_t slot, void* page) {
  if (slot >= e->slot_count) {
    return make_error(TM_INVALID_ARGUMENT, "opencl plugin: slot %u past %u slots", slot,
                      e->slot_count);
  }
  if (e->slots[slot] != UINT64_MAX) {
    return make_error(TM_INVALID_ARGUMENT, "opencl plugin: slot %u already mapped", slot);
  }
  ocl_device* d = e->device;
  pthread_mutex_lock(&d->mu);
  const uint64_t offset = page_offset(d, page, e->options.page_bytes);
  pthread_mutex_unlock(&d->mu);
  if (offset == UINT64_MAX) {
    return make_error(TM_INVALID_ARGUMENT, "opencl plugin: %p is no page of a KV region of %s",
                      page, d->text[PROP_DEVICE]);
  }
  e->slots[slot] = offset;
  return NULL;
}

static tm_error* executor_unmap_page(tm_executor* e, uint32_t slot) {
  if (slot >= e->slot_count || e->slots[slot] == UINT64_MAX) {
    return make_error(TM_INVALID_ARGUMENT, "opencl plugin: slot %u is not mapped", slot);
  }
  e->slots[slot] = UINT64_MAX;
  return NULL;
}

/* Everything forward refuses, checked before anything is enqueued. */
static tm_error* check_batch(const tm_executor* e, const tm_batch* batch,
                             const tm_step_output* output) {
  if (batch == NULL || output == NULL || batch->struct_size < sizeof(tm_batch) ||
      output->struct_size < sizeof(tm_step_output)) {
    return make_error(TM_INVALID_ARGUMENT, "opencl plugin: batch or output missing or too old");
  }
  if (batch->n_seqs == 0 || batch->seqs == NULL) {
    return make_error(TM_INVALID_ARGUMENT, "opencl plugin: empty batch");
  }
  uint64_t tokens = 0, rows = 0, argmax = 0;
  size_t s;
  uint32_t i;
  for (s = 0; s < batch->n_seqs; ++s) {
    const tm_sequence_step* q = &batch->seqs[s];
    if (q->n_tokens == 0 || q->tokens == NULL) {
      return make_error(TM_INVALID_ARGUMENT, "opencl plugin: sequence %zu has no tokens", s);
    }
    tokens += q->n_tokens;
    if (tokens > (uint64_t)e->options.max_batch_tokens) {
      return make_error(TM_INVALID_ARGUMENT, "opencl plugin: more than %d tokens in the batch",
                        e->options.max_batch_tokens);
    }
    for (i = 0; i < q->n_tokens; ++i) {
      if (q->tokens[i] < 0 || q->tokens[i] >= e->hp.vocab_size) {
        return make_error(TM_INVALID_ARGUMENT, "opencl plugin: token %d outside the vocabulary",
                          q->tokens[i]);
      }
    }
    const int64_t end = (int64_t)q->start_pos + q->n_tokens;
    if (q->start_pos < 0 || end > e->hp.context_length) {
      return make_error(TM_INVALID_ARGUMENT,
                        "opencl plugin: positions [%d, %lld) outside the context", q->start_pos,
                        (long long)end);
    }
    const int64_t blocks = (end + e->options.block_tokens - 1) / e->options.block_tokens;
    if ((int64_t)q->n_blocks < blocks || q->block_table == NULL) {
      return make_error(TM_INVALID_ARGUMENT, "opencl plugin: %u blocks for %lld positions",
                        q->n_blocks, (long long)end);
    }
    for (i = 0; i < (uint32_t)blocks; ++i) {
      const uint32_t b = q->block_table[i];
      if (b >= e->options.kv_blocks || e->slots[b / e->options.blocks_per_page] == UINT64_MAX) {
        return make_error(TM_INVALID_ARGUMENT, "opencl plugin: block %u unknown or unmapped", b);
      }
    }
    if (q->logits > TM_LOGITS_ARGMAX) {
      return make_error(TM_INVALID_ARGUMENT, "opencl plugin: logits mode %u", q->logits);
    }
    rows += q->logits == TM_LOGITS_ALL ? q->n_tokens : q->logits == TM_LOGITS_LAST ? 1 : 0;
    argmax += q->logits == TM_LOGITS_ARGMAX ? 1 : 0;
  }
  if (rows * (uint64_t)e->hp.vocab_size > output->logits_capacity ||
      (rows > 0 && output->logits == NULL) || argmax > output->argmax_capacity ||
      (argmax > 0 && output->argmax == NULL)) {
    return make_error(TM_INVALID_ARGUMENT, "opencl plugin: output buffers too small");
  }
  return NULL;
}

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
    if (grown == NULL) return make_error(TM_RESOURCE_EXHAUSTED, "opencl plugin: out of memory");
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
        return make_error(TM_INVALID_ARGUMENT,
                          "opencl plugin: block %u is in a page of a freed KV region", id);
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

static tm_error* executor_forward(tm_executor* e, const tm_batch* batch, tm_step_output* output) {
  tm_error* err = check_batch(e, batch, output);
  if (err != NULL) return err;
  size_t tokens = 0, tables = 0, rows = 0, argmax = 0, a;
  ocl_device* d = e->device;
  pthread_mutex_lock(&d->mu);
  const uint64_t start = now_ns(); /* the device is this step's from here */
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
    release_mem(&e->tables);
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
    release_mem(&e->logits);
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
  if (st.rc != CL_SUCCESS) return cl_failure(st.rc, st.what);
  output->device_time_ns = now_ns() - start;
  if (output->device_time_ns == 0) output->device_time_ns = 1;
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
    .abi_major = TM_DEVICE_ABI_MAJOR,
    .abi_minor = TM_DEVICE_ABI_MINOR,
    .kind = "opencl",
    .plugin_version = "opencl-1.0",
    .error_code = error_code,
    .error_message = error_message,
    .error_destroy = error_destroy,
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

TM_DEVICE_EXPORT const tm_device_api* tokenmill_device_plugin(void) { return &api; }

/* Internal declarations of the OpenCL device plugin, shared by its files
 * (not a public header: a vendor's plugin includes only tokenmill_device.h
 * and, optionally, tokenmill_device_util.h):
 *   opencl_plugin.c    the function table and the entry point
 *   opencl_device.c    platforms and devices: enumeration, info, samples
 *   opencl_kv_pool.c   KV regions in one pool buffer per device
 *   opencl_executor.c  executors: weights upload, kernels build, page slots
 *   opencl_forward.c   executor_forward: batch checks, staging, the kernels' enqueue
 */
#ifndef TOKENMILL_OPENCL_PLUGIN_H_
#define TOKENMILL_OPENCL_PLUGIN_H_

#define CL_TARGET_OPENCL_VERSION 120

#include <CL/cl.h>
#include <pthread.h>
#include <stdint.h>

#define TMU_PLUGIN_NAME "opencl plugin"
#include "tokenmill_device.h"
#include "tokenmill_device_util.h"

#define KV_HANDLE_BASE ((uint64_t)1 << 40) /* region handles: base + pool offset */
#define REGION_ALIGN 256u
#define MAX_WG 64
#define MATMUL_TOKENS 8 /* TT in kernels.cl: tokens per matmul work-group */

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

/* An error for a failed OpenCL call: TM_RESOURCE_EXHAUSTED for the
 * allocation failures, TM_INTERNAL otherwise. */
tm_error* ocl_cl_failure(cl_int rc, const char* what);
tm_error* ocl_no_device(uint32_t device);
void ocl_plugin_log(const tm_plugin* p, int level, const char* format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

tm_error* ocl_plugin_create(const tm_plugin_options* options, tm_plugin** out);
void ocl_plugin_destroy(tm_plugin* p);
uint32_t ocl_device_count(const tm_plugin* p);
tm_error* ocl_device_info(const tm_plugin* p, uint32_t device, tm_device_info* info);
tm_error* ocl_device_sample(tm_plugin* p, uint32_t device, tm_device_sample* sample);

/* ------------------------------------------------------------------ */
/* KV pool                                                             */

tm_error* ocl_kv_region_alloc(tm_plugin* p, uint32_t device, uint64_t bytes, void** base);
void ocl_kv_region_free(tm_plugin* p, uint32_t device, void* base, uint64_t bytes);
/* The pool offset of a page handle, or UINT64_MAX when no live region holds
 * [page, page + bytes). d->mu held. */
uint64_t ocl_page_offset(const ocl_device* d, const void* page, uint64_t bytes);

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

/* Releases *m (NULL is fine) and sets it NULL. */
void ocl_release_mem(cl_mem* m);
tm_error* ocl_executor_create(tm_plugin* p, uint32_t device, const tm_model* model,
                              const tm_executor_options* options, tm_executor** out);
void ocl_executor_destroy(tm_executor* e);
tm_error* ocl_executor_map_page(tm_executor* e, uint32_t slot, void* page);
tm_error* ocl_executor_unmap_page(tm_executor* e, uint32_t slot);
tm_error* ocl_executor_forward(tm_executor* e, const tm_batch* batch, tm_step_output* output);

#endif /* TOKENMILL_OPENCL_PLUGIN_H_ */

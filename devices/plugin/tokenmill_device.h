/* tokenmill_device.h: the whole contract between tokenmilld and a device
 * backend shipped as a shared library (a "device plugin").
 *
 * C99, no C++ types, no other header of tokenmill. A plugin includes only
 * this file and exports one symbol, tokenmill_device_plugin (below), which
 * returns a table of functions. Everything else the daemon reaches through
 * that table.
 *
 * Versioning (after PJRT's C API and ggml's backend registry):
 *  - TM_DEVICE_ABI_MAJOR changes when a field or function changes meaning or
 *    moves: the daemon refuses a plugin whose major differs from its own.
 *  - TM_DEVICE_ABI_MINOR grows when fields or functions are appended at the
 *    end of a struct. Every struct that crosses the boundary starts with
 *    `struct_size`, set by whoever fills it, so each side reads only the
 *    fields the other side knows (offsetof(field) + sizeof(field) <=
 *    struct_size) and leaves the rest at their documented default.
 *  - Optional features are looked up by name through get_proc_address, so a
 *    plugin can offer one without a version bump.
 *
 * Memory: whoever allocates frees, through its own side. The daemon passes
 * pointers that stay valid for the duration of the call unless a function
 * says otherwise; the plugin returns pointers that stay valid as each
 * function says. No allocation crosses the boundary except tm_error, which
 * the daemon releases with error_destroy.
 *
 * Errors: every fallible function returns a tm_error* (NULL = success). On
 * error the output arguments are untouched and, for executor_forward, the
 * KV cache is unchanged.
 *
 * Threads: plugin_create / plugin_destroy run on one thread with no other
 * call in flight. Enumeration (device_info) may run on any thread. Each
 * device's device_sample runs on one thread at a time. kv_region_alloc /
 * kv_region_free may run on any thread, concurrently for the same device:
 * they must be thread-safe. An executor's functions run on one thread at a
 * time (its engine thread); different executors, on the same device or not,
 * run concurrently on different threads. The daemon never calls an executor
 * of a device while another executor of that device is inside
 * executor_forward (a device arbiter grants exclusive steps), but a plugin
 * must not rely on that for memory safety.
 *
 * Invalid input: a plugin never aborts on what the daemon passes; it returns
 * TM_INVALID_ARGUMENT with a message naming what is wrong.
 */
#ifndef TOKENMILL_DEVICE_H_
#define TOKENMILL_DEVICE_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TM_DEVICE_ABI_MAJOR 1
#define TM_DEVICE_ABI_MINOR 1

/* The one exported entry point's name, for dlsym. */
#define TM_DEVICE_ENTRY_POINT "tokenmill_device_plugin"

#if defined(__GNUC__)
#define TM_DEVICE_EXPORT __attribute__((visibility("default")))
#else
#define TM_DEVICE_EXPORT
#endif

/* Opaque handles, defined by the plugin. */
typedef struct tm_plugin tm_plugin;     /* one loaded plugin's state */
typedef struct tm_executor tm_executor; /* one model on one device */
typedef struct tm_error tm_error;       /* an error: code + message */

/* Error codes: what the daemon should do, as absl::StatusCode says. */
typedef enum tm_status_code {
  TM_OK = 0,                  /* never the code of a tm_error */
  TM_INVALID_ARGUMENT = 3,    /* bad input: nothing changed */
  TM_NOT_FOUND = 5,           /* no such device, symbol, page */
  TM_RESOURCE_EXHAUSTED = 8,  /* out of device memory */
  TM_FAILED_PRECONDITION = 9, /* wrong state (slot mapped twice, ...) */
  TM_UNIMPLEMENTED = 12,      /* weight type, architecture, ... not supported */
  TM_INTERNAL = 13,           /* the device failed; the executor may be unusable */
  TM_UNAVAILABLE = 14         /* transient: retry later */
} tm_status_code;

/* Weight element types: GGML type ids, blocks as in GGUF. */
typedef enum tm_tensor_type {
  TM_TENSOR_F32 = 0,
  TM_TENSOR_F16 = 1,
  TM_TENSOR_Q4_0 = 2, /* blocks of 32: f16 scale d, 16 bytes of 4-bit q; x = d * (q - 8) */
  TM_TENSOR_Q8_0 = 8, /* blocks of 32: f16 scale d, 32 int8 q; x = d * q */
  /* K-quants (since 1.1), super-blocks of 256 as GGUF stores them:
   * Q4_K 144 bytes (f16 d, f16 dmin, 12 bytes of 6-bit sub-block scales and
   * mins, 128 of 4-bit q), Q5_K 176 (the same plus 32 bytes of fifth bits),
   * Q6_K 210 (128 bytes of low 4 bits, 64 of high 2 bits, 16 int8 scales,
   * f16 d). A model may mix them (Q4_K_M). */
  TM_TENSOR_Q4_K = 12,
  TM_TENSOR_Q5_K = 13,
  TM_TENSOR_Q6_K = 14,
  TM_TENSOR_BF16 = 30
} tm_tensor_type;

typedef enum tm_kv_type { TM_KV_F16 = 0, TM_KV_F32 = 1 } tm_kv_type;

/* ABI 1.1 added TM_ARCH_QWEN3: the daemon hands a plugin only architectures
 * whose bit it claims, so a 1.0 plugin never sees it. */
typedef enum tm_architecture {
  TM_ARCH_LLAMA = 0,
  TM_ARCH_QWEN2 = 1,
  TM_ARCH_QWEN3 = 2 /* since 1.1 */
} tm_architecture;

/* How RoPE pairs the dimensions of a head: adjacent (2i, 2i+1), GGUF llama;
 * halves (i, i + head_dim/2), Hugging Face and GGUF qwen2 / qwen3. */
typedef enum tm_rope_style { TM_ROPE_ADJACENT_PAIRS = 0, TM_ROPE_HALVES = 1 } tm_rope_style;

/* ------------------------------------------------------------------ */
/* Devices                                                             */

/* A vendor fact as key/value text ("driver_version" = "1.2.3"). */
typedef struct tm_property {
  const char* key;   /* [a-z0-9_]+ */
  const char* value; /* UTF-8 */
} tm_property;

/* Static facts of one device. The daemon sets struct_size; the plugin fills
 * the fields that struct_size covers. Strings and the property array belong
 * to the plugin and stay valid until plugin_destroy. */
typedef struct tm_device_info {
  size_t struct_size;
  const char* name;            /* human name, e.g. "Acme NPU 2" */
  uint64_t memory_total_bytes; /* device memory; 0 when unknown */
  const tm_property* properties;
  size_t property_count;
  /* What the device runs, as bit sets: bit (1 << TM_TENSOR_x) for each
   * weight type, (1 << TM_KV_x) for each KV type, (1 << TM_ARCH_x) for each
   * architecture. The conformance suite tests every combination claimed. */
  uint64_t weight_types;
  uint32_t kv_types;
  uint32_t architectures;
  /* Largest KV block size in tokens it runs (any size 1..this); 0 = any. */
  uint32_t max_block_tokens;
} tm_device_info;

/* Bits of tm_device_sample.present: which readings the device has. */
#define TM_SAMPLE_MEMORY_USED (1u << 0)
#define TM_SAMPLE_POWER (1u << 1)
#define TM_SAMPLE_ENERGY (1u << 2)
#define TM_SAMPLE_UTILIZATION (1u << 3)
#define TM_SAMPLE_TEMPERATURE (1u << 4)
#define TM_SAMPLE_MEMORY_FREE (1u << 5)

/* A reading of what changes. A value whose bit is not in `present` is
 * absent (the daemon shows null, never 0). */
typedef struct tm_device_sample {
  size_t struct_size;
  uint32_t present;
  uint64_t memory_total_bytes;
  uint64_t memory_used_bytes;
  uint64_t memory_free_bytes; /* what an allocation could still get */
  double power_watts;
  double energy_joules;     /* monotonic from an arbitrary origin */
  double utilization_ratio; /* 0..1 */
  double temperature_celsius;
} tm_device_sample;

/* ------------------------------------------------------------------ */
/* Models                                                              */

/* One weight tensor. shape is outermost first (a linear layer y = W x has
 * shape {out, in}: `out` rows of `in` contiguous elements; GGUF's ne[] is the
 * reverse). Rows are contiguous; quantized blocks never span two rows. */
typedef struct tm_tensor {
  const char* name; /* GGUF names, see tm_model below */
  uint32_t type;    /* tm_tensor_type */
  uint32_t n_dims;  /* 1 or 2 */
  int64_t shape[4];
  const void* data; /* host memory to upload from */
  uint64_t bytes;
} tm_tensor;

/* A Llama-family model (Llama 2/3, Mistral, Qwen2, Qwen3): y = embed, per
 * layer attention (RMSNorm, Q/K/V (+ Qwen2 biases), Qwen3's RMSNorm of each
 * head of Q and K (eps rms_norm_eps), RoPE, causal grouped-query
 * attention, output projection, residual) and SwiGLU FFN (RMSNorm,
 * silu(gate) * up, down, residual), then RMSNorm and the output projection.
 *
 * Tensor names (N = layer index): token_embd.weight {vocab, dim},
 * output_norm.weight {dim}, output.weight {vocab, dim} (the same data as
 * token_embd.weight when tied), rope_freqs.weight {head_dim/2} (optional,
 * f32: divisors of the RoPE frequencies), blk.N.attn_norm.weight {dim},
 * blk.N.attn_q.weight {heads * head_dim, dim}, blk.N.attn_k.weight and
 * blk.N.attn_v.weight {kv_heads * head_dim, dim}, blk.N.attn_q.bias,
 * blk.N.attn_k.bias, blk.N.attn_v.bias (Qwen2 only, f32),
 * blk.N.attn_q_norm.weight and blk.N.attn_k_norm.weight {head_dim} (Qwen3
 * only, f32: one weight vector applied to every head),
 * blk.N.attn_output.weight {dim, heads * head_dim}, blk.N.ffn_norm.weight
 * {dim}, blk.N.ffn_gate.weight and blk.N.ffn_up.weight {ffn_dim, dim},
 * blk.N.ffn_down.weight {dim, ffn_dim}. Norms and biases are f32.
 *
 * RoPE inverse frequency i (0 <= i < head_dim/2), computed in double:
 * theta^(-2i/head_dim); then divided by rope_freqs[i] when that tensor is
 * present, else, when rope_scaling_factor > 0, Llama 3 scaling (wavelength
 * 2 pi / inv above original_context / low_freq_factor: inv / factor; below
 * original_context / high_freq_factor: kept; between: blended with smooth =
 * (original_context / wavelength - low) / (high - low), (1 - smooth) * inv /
 * factor + smooth * inv). Pair (a, b) at position p rotates by p * inv:
 * a' = a cos - b sin, b' = a sin + b cos. Attention scores are scaled by
 * 1 / sqrt(head_dim).
 *
 * The daemon checks shapes and sizes before it calls executor_create; a
 * plugin still refuses what it cannot run (TM_UNIMPLEMENTED). */
typedef struct tm_model {
  size_t struct_size;
  const char* name;
  uint32_t architecture; /* tm_architecture */
  uint32_t rope_style;   /* tm_rope_style */
  int32_t dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, vocab_size, context_length;
  float rms_norm_eps;
  float rope_theta;
  float rope_scaling_factor; /* 0: no Llama 3 scaling */
  float rope_low_freq_factor;
  float rope_high_freq_factor;
  int32_t rope_original_context;
  const tm_tensor* tensors;
  size_t tensor_count;
} tm_model;

/* How an executor keeps its KV cache. KV lives only in arena pages the
 * daemon maps (executor_map_page). A block holds block_tokens consecutive
 * positions of one sequence for every layer, laid out as
 *   [layer][k=0|v=1][kv_head][token_in_block][head_dim]
 * in kv_type elements. Block b is at byte (b % blocks_per_page) x block
 * bytes of the page mapped in slot b / blocks_per_page. */
typedef struct tm_executor_options {
  size_t struct_size;
  int32_t block_tokens;     /* >= 1 */
  uint32_t kv_type;         /* tm_kv_type */
  uint32_t kv_blocks;       /* block id space, a multiple of blocks_per_page */
  uint32_t blocks_per_page; /* >= 1 */
  uint64_t page_bytes;      /* bytes of one arena page */
  int32_t max_batch_tokens; /* largest number of tokens in one batch */
} tm_executor_options;

/* ------------------------------------------------------------------ */
/* Steps                                                               */

typedef enum tm_logits_wanted {
  TM_LOGITS_NONE = 0,  /* a prefill chunk that is not the prompt's last */
  TM_LOGITS_LAST = 1,  /* the row of the step's last token */
  TM_LOGITS_ALL = 2,   /* one row per token of the step */
  TM_LOGITS_ARGMAX = 3 /* only the index of the last token's largest logit
                          (lowest on ties, NaN ignored, 0 when all NaN) */
} tm_logits_wanted;

/* One sequence's share of a step: a prefill chunk or one decode token. */
typedef struct tm_sequence_step {
  uint64_t seq_id;
  const int32_t* tokens; /* n_tokens >= 1 ids in [0, vocab_size) */
  uint32_t n_tokens;
  int32_t start_pos; /* position of tokens[0]; earlier positions are cached */
  /* Block ids covering positions [0, start_pos + n_tokens): block i holds
   * positions [i * block_tokens, (i + 1) * block_tokens). */
  const uint32_t* block_table;
  uint32_t n_blocks;
  uint32_t logits; /* tm_logits_wanted */
} tm_sequence_step;

typedef struct tm_batch {
  size_t struct_size;
  const tm_sequence_step* seqs;
  size_t n_seqs;
} tm_batch;

/* Where forward writes. The daemon allocates: logits has room for
 * logits_capacity floats, argmax for argmax_capacity ids. Rows of vocab_size
 * floats go out for each sequence in batch order: one if it wanted
 * TM_LOGITS_LAST, n_tokens if TM_LOGITS_ALL, none otherwise; one argmax id
 * per sequence that wanted TM_LOGITS_ARGMAX, in batch order. */
typedef struct tm_step_output {
  size_t struct_size;
  float* logits;
  size_t logits_capacity;
  int32_t* argmax;
  size_t argmax_capacity;
  /* Set by the plugin: the step's time on the device, in nanoseconds. */
  uint64_t device_time_ns;
} tm_step_output;

/* ------------------------------------------------------------------ */
/* Plugin                                                              */

typedef enum tm_log_level {
  TM_LOG_DEBUG = 0,
  TM_LOG_INFO = 1,
  TM_LOG_WARN = 2,
  TM_LOG_ERROR = 3
} tm_log_level;

/* What the daemon gives plugin_create. */
typedef struct tm_plugin_options {
  size_t struct_size;
  /* Where the plugin may log one line (no newline) at a time; may be NULL.
   * Thread-safe; valid until plugin_destroy. */
  void (*log)(void* user, int level, const char* message);
  void* log_user;
} tm_plugin_options;

/* The function table. The plugin fills it once (static storage is fine)
 * and it stays valid until the library is unloaded. Every function pointer
 * up to struct_size is non-NULL unless it says "optional". */
typedef struct tm_device_api {
  size_t struct_size;
  uint32_t abi_major; /* TM_DEVICE_ABI_MAJOR the plugin was built with */
  uint32_t abi_minor;
  /* The device kind: [a-z][a-z0-9_-]{0,31}, not "cpu" or "cuda". Device n of
   * the plugin is "KIND:n" in the daemon (config, API, metrics). */
  const char* kind;
  const char* plugin_version; /* free text, for logs and the devices API */

  /* Errors. error_code never returns TM_OK; error_message returns a
   * NUL-terminated string owned by the error. error_destroy frees it (NULL
   * is a no-op). Any thread. */
  tm_status_code (*error_code)(const tm_error* error);
  const char* (*error_message)(const tm_error* error);
  void (*error_destroy)(tm_error* error);

  /* Opens the plugin: finds its devices. *out is owned by the daemon until
   * plugin_destroy, which the daemon calls after destroying every executor
   * and freeing every KV region. */
  tm_error* (*plugin_create)(const tm_plugin_options* options, tm_plugin** out);
  void (*plugin_destroy)(tm_plugin* plugin);

  /* Devices are numbered 0..count-1 and the count never changes. */
  uint32_t (*device_count)(const tm_plugin* plugin);
  /* TM_NOT_FOUND for a device past the count. info->struct_size is set by
   * the daemon. */
  tm_error* (*device_info)(const tm_plugin* plugin, uint32_t device, tm_device_info* info);
  /* A reading now; sample->struct_size is set by the daemon. Cheap: the
   * daemon calls it every few seconds. */
  tm_error* (*device_sample)(tm_plugin* plugin, uint32_t device, tm_device_sample* sample);

  /* KV memory. The daemon grows each device's KV arena in regions (64 MiB
   * by default, a whole number of pages) and cuts them into pages itself.
   * kv_region_alloc returns the region's base as a device address, opaque to
   * the daemon except that page k of the region is base + k * page_bytes
   * (a plugin whose memory has no such addresses hands out handle ranges).
   * TM_RESOURCE_EXHAUSTED when the device has no room. kv_region_free gives
   * back exactly what kv_region_alloc returned, once, with the same size.
   * Both may run on any thread, concurrently. */
  tm_error* (*kv_region_alloc)(tm_plugin* plugin, uint32_t device, uint64_t bytes, void** base);
  void (*kv_region_free)(tm_plugin* plugin, uint32_t device, void* base, uint64_t bytes);

  /* An executor for `model` on `device`. The plugin uploads the weights
   * during the call (tensor data is valid only during it). TM_UNIMPLEMENTED
   * for an architecture, weight type, KV type or block size the device does
   * not claim; TM_INVALID_ARGUMENT for a model whose tensors do not match
   * its hyperparameters; TM_RESOURCE_EXHAUSTED when weights do not fit. */
  tm_error* (*executor_create)(tm_plugin* plugin, uint32_t device, const tm_model* model,
                               const tm_executor_options* options, tm_executor** out);
  /* Frees the executor's memory (not the KV pages: the daemon's). */
  void (*executor_destroy)(tm_executor* executor);

  /* Puts the arena page at `page` (an address inside a region of this
   * device) behind page slot `slot` (blocks [slot x blocks_per_page, (slot +
   * 1) x blocks_per_page)). TM_INVALID_ARGUMENT: slot past kv_blocks /
   * blocks_per_page, slot already mapped. The page's content is undefined. */
  tm_error* (*executor_map_page)(tm_executor* executor, uint32_t slot, void* page);
  /* Leaves `slot` without a page. TM_INVALID_ARGUMENT when it holds none. */
  tm_error* (*executor_unmap_page)(tm_executor* executor, uint32_t slot);

  /* Runs one step: every sequence's tokens through the model, their K/V
   * written to their blocks, logits / argmax written to `output`. Refuses
   * (TM_INVALID_ARGUMENT, nothing written, KV unchanged): no sequence, a
   * sequence with no tokens, tokens outside the vocabulary, negative
   * start_pos, positions past context_length, too few blocks, block ids past
   * kv_blocks or in an unmapped slot, more than max_batch_tokens tokens, an
   * unknown logits mode, output buffers too small. Any other failure is
   * TM_INTERNAL (the daemon fails the step's requests). */
  tm_error* (*executor_forward)(tm_executor* executor, const tm_batch* batch,
                                tm_step_output* output);

  /* Optional features by name (NULL when not offered), like ggml's
   * get_proc_address. May itself be NULL. */
  void* (*get_proc_address)(const char* name);
} tm_device_api;

/* The one entry point. Returns the plugin's table (never NULL); the daemon
 * checks abi_major == TM_DEVICE_ABI_MAJOR and struct_size before it calls
 * anything else in it. Any thread; no side effects. */
typedef const tm_device_api* (*tm_device_plugin_fn)(void);
TM_DEVICE_EXPORT const tm_device_api* tokenmill_device_plugin(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TOKENMILL_DEVICE_H_ */

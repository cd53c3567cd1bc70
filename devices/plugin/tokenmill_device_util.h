/* tokenmill_device_util.h: optional helpers for writing a device plugin.
 *
 * Not part of the contract: tokenmill_device.h alone is the ABI, and a
 * plugin may ignore this file. It holds the boilerplate every plugin writes
 * the same way (the reference and OpenCL plugins both use it): error objects,
 * the struct_size-bounded copy, f16 <-> f32, a monotonic clock, the tensor
 * lookup, RoPE's inverse frequencies as tm_model defines them, and the batch
 * checks that executor_forward must make before it touches anything.
 *
 * C99, header-only (every function static inline), no dependency beyond
 * tokenmill_device.h and the C library (link libm for the RoPE helper).
 * Names start with tmu_. Ship it beside tokenmill_device.h: a plugin's build
 * includes both from the same folder.
 *
 * Errors: this file defines struct tm_error (code, message) and
 * tmu_error_code / tmu_error_message / tmu_error_destroy for the table. A
 * plugin with its own error type defines TMU_NO_ERRORS before including it
 * (tmu_check_batch then needs tmu_error, so it goes too). Messages start with
 * TMU_PLUGIN_NAME (define it before including, e.g. "acme plugin"; default
 * "device plugin") and hold at most TMU_ERROR_BYTES - 1 bytes.
 *
 * Threads: every function is safe on any thread (tmu_error allocates with
 * malloc; when that fails it returns a shared static out-of-memory error that
 * tmu_error_destroy never frees).
 */
#ifndef TOKENMILL_DEVICE_UTIL_H_
#define TOKENMILL_DEVICE_UTIL_H_

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenmill_device.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef TMU_PLUGIN_NAME
#define TMU_PLUGIN_NAME "device plugin"
#endif

/* ------------------------------------------------------------------ */
/* Errors                                                              */

#ifndef TMU_NO_ERRORS

#ifndef TMU_ERROR_BYTES
#define TMU_ERROR_BYTES 1024
#endif

struct tm_error {
  tm_status_code code;
  int is_static; /* the out-of-memory error: never freed */
  char message[TMU_ERROR_BYTES];
};

/* A new error: TMU_PLUGIN_NAME ": " then the printf-formatted message. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static inline tm_error*
tmu_error(tm_status_code code, const char* format, ...) {
  static struct tm_error out_of_memory = {TM_RESOURCE_EXHAUSTED, 1,
                                          TMU_PLUGIN_NAME ": out of host memory"};
  tm_error* e = (tm_error*)malloc(sizeof(tm_error));
  if (e == NULL) return &out_of_memory;
  e->code = code;
  e->is_static = 0;
  const int prefix = snprintf(e->message, sizeof(e->message), "%s: ", TMU_PLUGIN_NAME);
  va_list args;
  va_start(args, format);
  vsnprintf(e->message + prefix, sizeof(e->message) - (size_t)prefix, format, args);
  va_end(args);
  return e;
}

/* For the function table's error_code, error_message, error_destroy. */
static inline tm_status_code tmu_error_code(const tm_error* e) { return e->code; }
static inline const char* tmu_error_message(const tm_error* e) { return e->message; }
static inline void tmu_error_destroy(tm_error* e) {
  if (e != NULL && !e->is_static) free(e);
}

#endif /* TMU_NO_ERRORS */

/* ------------------------------------------------------------------ */
/* Numbers and time                                                    */

/* IEEE half (as GGUF's F16 tensors and an F16 KV cache hold it) to float. */
static inline float tmu_f16_to_f32(uint16_t h) {
  const uint32_t sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  float value;
  if (exponent == 0) {
    value = ldexpf((float)mantissa, -24);
  } else if (exponent == 31) {
    value = mantissa == 0 ? INFINITY : NAN;
  } else {
    value = ldexpf((float)(mantissa + 1024), (int)exponent - 25);
  }
  return sign ? -value : value;
}

/* Float to IEEE half, rounded to nearest, ties to even; NaN stays NaN. */
static inline uint16_t tmu_f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, sizeof(x));
  const uint32_t sign = (x >> 16) & 0x8000u, exponent = (x >> 23) & 0xffu;
  uint32_t mantissa = x & 0x7fffffu;
  if (exponent == 0xff) return (uint16_t)(sign | 0x7c00u | (mantissa ? 0x200u : 0u));
  const int32_t e = (int32_t)exponent - 127 + 15;
  if (e >= 31) return (uint16_t)(sign | 0x7c00u);
  uint32_t half, rest, halfway;
  if (e <= 0) { /* a half subnormal (or zero) */
    if (e < -10) return (uint16_t)sign;
    mantissa |= 0x800000u;
    const uint32_t shift = (uint32_t)(14 - e);
    half = mantissa >> shift;
    rest = mantissa & ((1u << shift) - 1u);
    halfway = 1u << (shift - 1u);
  } else {
    half = ((uint32_t)e << 10) | (mantissa >> 13);
    rest = mantissa & 0x1fffu;
    halfway = 0x1000u;
  }
  if (rest > halfway || (rest == halfway && (half & 1u))) ++half; /* may carry into inf */
  return (uint16_t)(sign | half);
}

/* Copies the struct `src` (a tm_device_info or tm_device_sample the plugin
 * filled) into `dst` (the daemon's), only as far as dst->struct_size covers,
 * with struct_size set to what was written: how a plugin built against a
 * newer minor answers an older daemon. */
#define TMU_COPY_SIZED(dst, src)                                                        \
  do {                                                                                  \
    size_t size_ = (dst)->struct_size < sizeof(src) ? (dst)->struct_size : sizeof(src); \
    (src).struct_size = size_;                                                          \
    memcpy((dst), &(src), size_);                                                       \
  } while (0)

/* Copies what the daemon passed in `*src` (tm_plugin_options, say) into the
 * plugin's `*dst` as far as src->struct_size covers; the rest of *dst keeps
 * its defaults. */
#define TMU_COPY_IN(dst, src)                                                                 \
  do {                                                                                        \
    size_t size_ = (src)->struct_size < sizeof(*(dst)) ? (src)->struct_size : sizeof(*(dst)); \
    memcpy((dst), (src), size_);                                                              \
  } while (0)

/* A little-endian 16-bit value at any alignment (GGUF block scales). */
static inline uint16_t tmu_read_u16(const uint8_t* p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* CLOCK_MONOTONIC in nanoseconds, for tm_step_output.device_time_ns. Needs
 * _POSIX_C_SOURCE >= 199309L (define it before any include). */
static inline uint64_t tmu_now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* Models                                                              */

/* The tensor of `model` called `name`, or NULL. */
static inline const tm_tensor* tmu_find_tensor(const tm_model* model, const char* name) {
  size_t i;
  for (i = 0; i < model->tensor_count; ++i) {
    if (model->tensors[i].name != NULL && strcmp(model->tensors[i].name, name) == 0) {
      return &model->tensors[i];
    }
  }
  return NULL;
}

/* RoPE's head_dim / 2 inverse frequencies as tm_model defines them (in
 * double, rounded to float at the end): divided by freq_factors[i] (the
 * rope_freqs.weight tensor's data) when not NULL, else Llama 3 scaled when
 * model->rope_scaling_factor > 0. */
static inline void tmu_rope_inverse_frequencies(const tm_model* model, const float* freq_factors,
                                                float* inv_freq) {
  const int32_t half = model->head_dim / 2;
  const double scaled_above = model->rope_original_context / (double)model->rope_low_freq_factor;
  const double kept_below = model->rope_original_context / (double)model->rope_high_freq_factor;
  int32_t i;
  for (i = 0; i < half; ++i) {
    double inv = exp(-2.0 * i / model->head_dim * log((double)model->rope_theta));
    if (freq_factors != NULL) {
      inv /= freq_factors[i];
    } else if (model->rope_scaling_factor > 0.0f) {
      const double wavelength = 2.0 * 3.14159265358979323846 / inv;
      if (wavelength > scaled_above) {
        inv /= model->rope_scaling_factor;
      } else if (wavelength >= kept_below) {
        const double smooth =
            (model->rope_original_context / wavelength - model->rope_low_freq_factor) /
            ((double)model->rope_high_freq_factor - model->rope_low_freq_factor);
        inv = (1.0 - smooth) * inv / model->rope_scaling_factor + smooth * inv;
      }
    }
    inv_freq[i] = (float)inv;
  }
}

/* The TM_LOGITS_ARGMAX rule on one row: the largest logit's index, lowest on
 * ties, NaN ignored, 0 when every logit is NaN. */
static inline int32_t tmu_greedy_token(const float* logits, int32_t n) {
  int32_t best = -1, i;
  for (i = 0; i < n; ++i) {
    if (logits[i] != logits[i]) continue; /* NaN */
    if (best < 0 || logits[i] > logits[best]) best = i;
  }
  return best < 0 ? 0 : best;
}

/* ------------------------------------------------------------------ */
/* Steps                                                               */

#ifndef TMU_NO_ERRORS

/* What tmu_check_batch needs of an executor. */
typedef struct tmu_batch_limits {
  int32_t vocab_size;
  int32_t context_length;
  int32_t block_tokens;
  uint32_t kv_blocks;
  uint32_t blocks_per_page;
  int32_t max_batch_tokens;
  /* Whether page slot `slot` (< kv_blocks / blocks_per_page) holds a page. */
  int (*slot_mapped)(const void* user, uint32_t slot);
  const void* user;
} tmu_batch_limits;

/* The limits of an executor made from `model` and `options`. */
static inline tmu_batch_limits tmu_limits_for(const tm_model* model,
                                              const tm_executor_options* options,
                                              int (*slot_mapped)(const void* user, uint32_t slot),
                                              const void* user) {
  tmu_batch_limits l;
  l.vocab_size = model->vocab_size;
  l.context_length = model->context_length;
  l.block_tokens = options->block_tokens;
  l.kv_blocks = options->kv_blocks;
  l.blocks_per_page = options->blocks_per_page;
  l.max_batch_tokens = options->max_batch_tokens;
  l.slot_mapped = slot_mapped;
  l.user = user;
  return l;
}

/* What a valid batch holds: tokens, logits rows out, argmax ids out. */
typedef struct tmu_batch_counts {
  uint64_t tokens;
  uint64_t logits_rows;
  uint64_t argmax;
} tmu_batch_counts;

/* Blocks a sequence step needs: those covering [0, start_pos + n_tokens). */
static inline uint32_t tmu_blocks_needed(const tm_sequence_step* q, int32_t block_tokens) {
  return (uint32_t)(((int64_t)q->start_pos + q->n_tokens + block_tokens - 1) / block_tokens);
}

/* Every refusal executor_forward owes (tokenmill_device.h), checked before
 * anything is written: a missing or too old batch or output, no sequence, a
 * sequence with no tokens, tokens outside the vocabulary, negative start_pos
 * or positions past the context, too few blocks, block ids past kv_blocks or
 * in an unmapped slot, an unknown logits mode, more than max_batch_tokens
 * tokens, output buffers too small. NULL (and *counts filled, when not NULL)
 * for a batch forward may run; else a TM_INVALID_ARGUMENT error. */
static inline tm_error* tmu_check_batch(const tmu_batch_limits* limits, const tm_batch* batch,
                                        const tm_step_output* output, tmu_batch_counts* counts) {
  if (batch == NULL || output == NULL || batch->struct_size < sizeof(tm_batch) ||
      output->struct_size < sizeof(tm_step_output)) {
    return tmu_error(TM_INVALID_ARGUMENT, "batch or output missing or too old");
  }
  if (batch->n_seqs == 0 || batch->seqs == NULL) {
    return tmu_error(TM_INVALID_ARGUMENT, "empty batch");
  }
  tmu_batch_counts c = {0, 0, 0};
  size_t s;
  uint32_t i;
  for (s = 0; s < batch->n_seqs; ++s) {
    const tm_sequence_step* q = &batch->seqs[s];
    if (q->n_tokens == 0 || q->tokens == NULL) {
      return tmu_error(TM_INVALID_ARGUMENT, "sequence %zu has no tokens", s);
    }
    c.tokens += q->n_tokens;
    if (c.tokens > (uint64_t)limits->max_batch_tokens) {
      return tmu_error(TM_INVALID_ARGUMENT, "more than %d tokens in the batch",
                       limits->max_batch_tokens);
    }
    for (i = 0; i < q->n_tokens; ++i) {
      if (q->tokens[i] < 0 || q->tokens[i] >= limits->vocab_size) {
        return tmu_error(TM_INVALID_ARGUMENT, "token %d outside the vocabulary", q->tokens[i]);
      }
    }
    const int64_t end = (int64_t)q->start_pos + q->n_tokens;
    if (q->start_pos < 0 || end > limits->context_length) {
      return tmu_error(TM_INVALID_ARGUMENT, "positions [%d, %lld) outside the context",
                       q->start_pos, (long long)end);
    }
    const uint32_t blocks = tmu_blocks_needed(q, limits->block_tokens);
    if (q->n_blocks < blocks || q->block_table == NULL) {
      return tmu_error(TM_INVALID_ARGUMENT, "%u blocks for %lld positions", q->n_blocks,
                       (long long)end);
    }
    for (i = 0; i < blocks; ++i) {
      const uint32_t b = q->block_table[i];
      if (b >= limits->kv_blocks ||
          !limits->slot_mapped(limits->user, b / limits->blocks_per_page)) {
        return tmu_error(TM_INVALID_ARGUMENT, "block %u unknown or unmapped", b);
      }
    }
    if (q->logits > TM_LOGITS_ARGMAX) {
      return tmu_error(TM_INVALID_ARGUMENT, "logits mode %u", q->logits);
    }
    c.logits_rows += q->logits == TM_LOGITS_ALL ? q->n_tokens : q->logits == TM_LOGITS_LAST ? 1 : 0;
    c.argmax += q->logits == TM_LOGITS_ARGMAX ? 1 : 0;
  }
  if (c.logits_rows * (uint64_t)limits->vocab_size > output->logits_capacity ||
      (c.logits_rows > 0 && output->logits == NULL) || c.argmax > output->argmax_capacity ||
      (c.argmax > 0 && output->argmax == NULL)) {
    return tmu_error(TM_INVALID_ARGUMENT, "output buffers too small");
  }
  if (counts != NULL) *counts = c;
  return NULL;
}

#endif /* TMU_NO_ERRORS */

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TOKENMILL_DEVICE_UTIL_H_ */

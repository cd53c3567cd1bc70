/* The OpenCL plugin's platforms and devices: every OpenCL device of every
 * platform the ICD loader finds is one tokenmill device "opencl:N". */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opencl_plugin.h"

tm_error* ocl_cl_failure(cl_int rc, const char* what) {
  const tm_status_code code = rc == CL_MEM_OBJECT_ALLOCATION_FAILURE || rc == CL_OUT_OF_RESOURCES
                                  ? TM_RESOURCE_EXHAUSTED
                                  : TM_INTERNAL;
  return tmu_error(code, "opencl plugin: %s failed (OpenCL error %d)", what, (int)rc);
}

void ocl_plugin_log(const tm_plugin* p, int level, const char* format, ...) {
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
  if (rc != CL_SUCCESS) return ocl_cl_failure(rc, "clCreateContext");
  d->queue = clCreateCommandQueue(d->context, id, 0, &rc);
  if (rc != CL_SUCCESS) {
    clReleaseContext(d->context);
    return ocl_cl_failure(rc, "clCreateCommandQueue");
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

void ocl_plugin_destroy(tm_plugin* p) {
  if (p == NULL) return;
  uint32_t i;
  for (i = 0; i < p->count; ++i) release_device(&p->devices[i]);
  free(p->devices);
  free(p);
}

tm_error* ocl_plugin_create(const tm_plugin_options* options, tm_plugin** out) {
  tm_plugin* p = (tm_plugin*)calloc(1, sizeof(tm_plugin));
  if (p == NULL) return tmu_error(TM_RESOURCE_EXHAUSTED, "out of memory");
  if (options != NULL) TMU_COPY_IN(&p->options, options);
  cl_uint platform_count = 0;
  cl_int rc = clGetPlatformIDs(0, NULL, &platform_count);
  if (rc != CL_SUCCESS || platform_count == 0) {
    /* -1001 (no ICD installed) is a machine without OpenCL: no devices. */
    ocl_plugin_log(p, TM_LOG_INFO, "opencl plugin: no OpenCL platform (clGetPlatformIDs: %d)",
                   (int)rc);
    *out = p;
    return NULL;
  }
  cl_platform_id* platforms = (cl_platform_id*)calloc(platform_count, sizeof(cl_platform_id));
  if (platforms == NULL) {
    free(p);
    return tmu_error(TM_RESOURCE_EXHAUSTED, "out of memory");
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
      err = tmu_error(TM_RESOURCE_EXHAUSTED, "out of memory");
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
        ocl_plugin_log(p, TM_LOG_WARN, "opencl plugin: leaving a device of platform %u out: %s", i,
                       skipped->message);
        tmu_error_destroy(skipped);
      }
    }
    free(ids);
  }
  free(platforms);
  if (err != NULL) {
    ocl_plugin_destroy(p);
    return err;
  }
  for (i = 0; i < p->count; ++i) {
    ocl_plugin_log(p, TM_LOG_INFO, "opencl plugin: opencl:%u is %s (%s, %s compute units)", i,
                   p->devices[i].text[PROP_DEVICE], p->devices[i].text[PROP_PLATFORM],
                   p->devices[i].text[PROP_COMPUTE_UNITS]);
  }
  *out = p;
  return NULL;
}

uint32_t ocl_device_count(const tm_plugin* p) { return p->count; }

tm_error* ocl_no_device(uint32_t device) { return tmu_error(TM_NOT_FOUND, "no device %u", device); }

tm_error* ocl_device_info(const tm_plugin* p, uint32_t device, tm_device_info* info) {
  if (device >= p->count) return ocl_no_device(device);
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
  TMU_COPY_SIZED(info, full);
  return NULL;
}

tm_error* ocl_device_sample(tm_plugin* p, uint32_t device, tm_device_sample* sample) {
  if (device >= p->count) return ocl_no_device(device);
  ocl_device* d = &p->devices[device];
  tm_device_sample full;
  memset(&full, 0, sizeof(full));
  pthread_mutex_lock(&d->mu);
  full.memory_used_bytes = d->used_bytes;
  pthread_mutex_unlock(&d->mu);
  full.present = TM_SAMPLE_MEMORY_USED; /* OpenCL 1.2 reports nothing else */
  full.memory_total_bytes = d->global_memory;
  TMU_COPY_SIZED(sample, full);
  return NULL;
}

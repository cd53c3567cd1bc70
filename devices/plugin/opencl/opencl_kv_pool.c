/* The OpenCL plugin's KV memory: the ABI wants a region base such that page
 * k is base + k x page_bytes. OpenCL buffers have no such addresses, so a
 * region is a byte range of the device's pool buffer and its "address" is a
 * handle, KV_HANDLE_BASE plus the range's offset; kernels take the pool and
 * element offsets. The pool grows (a new buffer, the old content copied)
 * when a region does not fit, up to CL_DEVICE_MAX_MEM_ALLOC_SIZE, under the
 * device's lock, which executor_forward also holds. */
#define _POSIX_C_SOURCE 200809L

#include <stdlib.h>
#include <string.h>

#include "opencl_plugin.h"

/* Makes the pool at least `bytes` long, keeping its content. d->mu held. */
static tm_error* grow_pool(ocl_device* d, uint64_t bytes) {
  if (bytes <= d->pool_bytes) return NULL;
  uint64_t capacity = d->pool_bytes + d->pool_bytes / 2;
  if (capacity < bytes) capacity = bytes;
  if (capacity > d->max_alloc) capacity = d->max_alloc;
  if (capacity < bytes) {
    return tmu_error(TM_RESOURCE_EXHAUSTED,
                     "KV pool of %llu bytes would pass the device's largest "
                     "buffer (%llu bytes)",
                     (unsigned long long)bytes, (unsigned long long)d->max_alloc);
  }
  cl_int rc;
  cl_mem grown = clCreateBuffer(d->context, CL_MEM_READ_WRITE, (size_t)capacity, NULL, &rc);
  if (rc != CL_SUCCESS) return ocl_cl_failure(rc, "clCreateBuffer (KV pool)");
  if (d->pool != NULL) {
    rc = clEnqueueCopyBuffer(d->queue, d->pool, grown, 0, 0, (size_t)d->pool_bytes, 0, NULL, NULL);
    if (rc == CL_SUCCESS) rc = clFinish(d->queue);
    if (rc != CL_SUCCESS) {
      clReleaseMemObject(grown);
      return ocl_cl_failure(rc, "copying the KV pool");
    }
    clReleaseMemObject(d->pool);
  }
  d->pool = grown;
  d->pool_bytes = capacity;
  return NULL;
}

tm_error* ocl_kv_region_alloc(tm_plugin* p, uint32_t device, uint64_t bytes, void** base) {
  if (device >= p->count) return ocl_no_device(device);
  if (bytes == 0) return tmu_error(TM_INVALID_ARGUMENT, "empty KV region");
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
      err = tmu_error(TM_RESOURCE_EXHAUSTED, "out of memory");
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

void ocl_kv_region_free(tm_plugin* p, uint32_t device, void* base, uint64_t bytes) {
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
uint64_t ocl_page_offset(const ocl_device* d, const void* page, uint64_t bytes) {
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

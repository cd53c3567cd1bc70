/* The OpenCL device plugin: every OpenCL device of every platform the ICD
 * loader finds is one tokenmill device "opencl:N". Weights live in device
 * buffers uploaded from the daemon's host pointers, KV pages in one device
 * buffer per device (the "KV pool"), and the Llama-family forward runs as
 * OpenCL C kernels (kernels.cl) built once per executor with clBuildProgram.
 * Logits cross back to the host only for the rows a step asks for; argmax
 * runs on the device. It includes only the public headers
 * (tokenmill_device.h and the optional tokenmill_device_util.h) and
 * OpenCL's. Its files are listed in opencl_plugin.h; KV addresses are
 * explained in opencl_kv_pool.c.
 */
#define _POSIX_C_SOURCE 200809L

#include "opencl_plugin.h"

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
    .error_code = tmu_error_code,
    .error_message = tmu_error_message,
    .error_destroy = tmu_error_destroy,
    .plugin_create = ocl_plugin_create,
    .plugin_destroy = ocl_plugin_destroy,
    .device_count = ocl_device_count,
    .device_info = ocl_device_info,
    .device_sample = ocl_device_sample,
    .kv_region_alloc = ocl_kv_region_alloc,
    .kv_region_free = ocl_kv_region_free,
    .executor_create = ocl_executor_create,
    .executor_destroy = ocl_executor_destroy,
    .executor_map_page = ocl_executor_map_page,
    .executor_unmap_page = ocl_executor_unmap_page,
    .executor_forward = ocl_executor_forward,
    .get_proc_address = get_proc_address,
};

TM_DEVICE_EXPORT const tm_device_api* tokenmill_device_plugin(void) { return &api; }

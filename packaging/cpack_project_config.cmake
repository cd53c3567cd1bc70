# Read by cpack for each generator (CPACK_PROJECT_CONFIG_FILE): the
# tokenmill-opencl package is made only when the OpenCL plugin was built, so
# a build of tokenmilld and tokenmill alone still packs the tokenmill package.
include(${CPACK_TOKENMILL_OPENCL_FILE} OPTIONAL)
if(NOT TOKENMILL_OPENCL_PLUGIN_FILE OR NOT EXISTS "${TOKENMILL_OPENCL_PLUGIN_FILE}")
  list(REMOVE_ITEM CPACK_COMPONENTS_ALL opencl)
endif()

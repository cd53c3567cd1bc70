# cmake -DINPUT=kernels.cl -DOUTPUT=opencl_kernels.h -P embed_kernels.cmake:
# writes the file's bytes as a NUL-terminated C array.
file(READ "${INPUT}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE "${OUTPUT}" "/* Generated from kernels.cl by embed_kernels.cmake. */\n"
  "static const char opencl_kernels_source[] = {${bytes}0x00};\n")

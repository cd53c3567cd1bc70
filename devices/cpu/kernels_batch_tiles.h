// The loop the batch kernels share (kernels_avx512_q8_batch.cc,
// kernels_avx512_kquant_batch.cc, kernels_avx2_kquant_batch.cc): weight rows
// in tiles whose outputs fill one register's lanes, activation rows in
// groups, one tile function per group size. Plain C++ (no intrinsics): the
// tile functions carry the ISA.
#pragma once

#include <cstdint>
#include <utility>

#include "devices/cpu/kernels_internal.h"

namespace tokenmill::devices::cpu::internal {

// One tile call: the tile's weight rows from w (row stride w_stride) against
// A activation rows from x (stride x_stride), cols wide, into y[a * y_stride
// + r]. `next` is the following tile (contiguous) for kernels that prefetch
// it, or null.
using BatchTileFn = void (*)(const uint8_t* w, int64_t w_stride, const uint8_t* x, int64_t x_stride,
                             int64_t cols, const char* next, float* y, int64_t y_stride);

// Tiles::Run<a>, a in 1..sizeof...(A).
template <typename Tiles, int... A>
constexpr BatchTileFn PickBatchTile(int a, std::integer_sequence<int, A...>) {
  BatchTileFn fn = nullptr;
  ((fn = (a == A + 1) ? &Tiles::template Run<A + 1> : fn), ...);
  return fn;
}

// Rows [row_begin, row_end) in tiles of kTile (the range must be a multiple
// of it) against every activation row, those in near-equal groups of at
// most kMaxGroup (17 rows: 9 + 8). Only a tile's first group gets `next`
// (when the following tile is in the range): later groups find the tile in
// cache.
template <typename Tiles, int kTile, int kMaxGroup>
void RunBatchTiles(const TensorView& w, int64_t row_begin, int64_t row_end, const Activations& x,
                   float* y, int64_t y_stride) {
  const int64_t w_stride = static_cast<int64_t>(w.row_bytes());
  const int64_t x_stride = Q8RowBytes(x.cols);
  const int64_t groups = (x.rows + kMaxGroup - 1) / kMaxGroup;
  for (int64_t n = row_begin; n + kTile <= row_end; n += kTile) {
    const uint8_t* wn = w.row(n);
    const bool more = n + 2 * kTile <= row_end;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t m0 = x.rows * g / groups, m1 = x.rows * (g + 1) / groups;
      const char* next =
          g == 0 && more ? reinterpret_cast<const char*>(wn + kTile * w_stride) : nullptr;
      const BatchTileFn tile = PickBatchTile<Tiles>(static_cast<int>(m1 - m0),
                                                    std::make_integer_sequence<int, kMaxGroup>());
      tile(wn, w_stride, x.q8 + m0 * x_stride, x_stride, x.cols, next, y + m0 * y_stride + n,
           y_stride);
    }
  }
}

}  // namespace tokenmill::devices::cpu::internal

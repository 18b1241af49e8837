// Vectorised SoftPool CPU kernels (ATen's at::vec; AVX2 on x86-64 builds).
//
// Vec::size() windows are computed side by side, one per SIMD lane: lane j of
// cells[i] holds cell i of window j. Two layouts feed the lanes:
// - rows: input contiguous along W; the lanes are neighbouring output columns
//   (stride 1: one load; stride 2: two loads and a deinterleave; else a gather);
// - channels_last: the lanes are neighbouring channels, one load per cell.
// The window arithmetic is that of window.h; windows with a non-finite maximum
// take window.h's scalar path in the backward. The backward kernels zero the
// gradient themselves, plane by plane.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <limits>
#include <tuple>

#include "soft_pool_cpu.h"

namespace mmsoftpool {

namespace {

using at::vec::Vectorized;

// kCells > 0: windows of exactly kCells cells, known at compile time so the
// loops unroll and the cells stay in registers; 0: any count up to
// kMaxVectorCells. Cells outside the input (padding) are -inf.
template <typename scalar_t, int kCells>
struct VecSoftPool {
  using Vec = Vectorized<scalar_t>;
  static constexpr int64_t kLanes = Vec::size();
  static constexpr scalar_t kInf = std::numeric_limits<scalar_t>::infinity();
  static constexpr int64_t kMax = kCells > 0 ? kCells : kMaxVectorCells;

  static int64_t cell_count(const PoolGeometry& g) {
    return kCells > 0 ? kCells : g.kernel[0] * g.kernel[1] * g.kernel[2];
  }

  // d = x - m with -inf cells moved to the lowest finite value, so that exp(d)
  // is 0 and e * d is 0 rather than 0 * inf = NaN.
  static Vec shifted(const Vec& cell, const Vec& m) {
    return at::vec::maximum(cell - m, Vec(std::numeric_limits<scalar_t>::lowest()));
  }

  static Vec window_max(const Vec* cells, int64_t count) {
    Vec m = cells[0];
    for (int64_t i = 1; i < count; ++i) m = at::vec::maximum(m, cells[i]);  // NaN-propagating
    return m;
  }

  static void forward(const Vec* cells, int64_t count, Vec& out, Vec& log_norm) {
    const Vec m = window_max(cells, count);
    Vec sum(0), weighted(0);
    for (int64_t i = 0; i < count; ++i) {
      const Vec d = shifted(cells[i], m);
      const Vec e = d.exp();
      sum = sum + e;
      weighted = at::vec::fmadd(e, d, weighted);
    }
    // A window of NaN gives NaN through the arithmetic; +inf and all -inf
    // windows give their maximum.
    const Vec infinite = m.abs() == Vec(kInf);
    out = Vec::blendv(m + weighted / sum, m, infinite);
    log_norm = Vec::blendv(sum.log(), Vec(0), infinite);
  }

  // Gradients of the cells of the lanes' windows; false (nothing written) if a
  // window's maximum is not finite.
  static bool backward(const Vec* cells, int64_t count, const Vec& grad, const Vec& log_norm,
                       Vec* cell_grads) {
    const Vec m = window_max(cells, count);
    if ((m.abs() < Vec(kInf)).zero_mask() != 0) return false;
    Vec d[kMax], weight[kMax];
    Vec shifted_out(0);  // y - m
    for (int64_t i = 0; i < count; ++i) {
      d[i] = shifted(cells[i], m);
      weight[i] = (d[i] - log_norm).exp();
      shifted_out = at::vec::fmadd(weight[i], d[i], shifted_out);
    }
    const Vec one_minus = Vec(1) - shifted_out;
    for (int64_t i = 0; i < count; ++i) cell_grads[i] = grad * weight[i] * (one_minus + d[i]);
    return true;
  }

  // Lane j: ptr[j * stride] for j < lanes, else 0 (stride 0: an expanded tensor).
  static Vec load_strided(const scalar_t* ptr, int64_t stride, int64_t lanes) {
    if (stride == 1) return Vec::loadu(ptr, lanes);
    alignas(64) scalar_t buffer[kLanes] = {};
    for (int64_t j = 0; j < lanes; ++j) buffer[j] = ptr[j * stride];
    return Vec::loadu(buffer);
  }

  // ---- rows: lanes are output columns ow0 .. ow0 + lanes - 1 of one row ----

  // Lane j: row[first + j * stride], -inf outside [0, width), 0 past `lanes`.
  static Vec load_columns(const scalar_t* row, int64_t width, int64_t first, int64_t stride,
                          int64_t lanes) {
    if (lanes == kLanes && first >= 0) {
      if (stride == 1 && first + kLanes <= width) return Vec::loadu(row + first);
      if (stride == 2 && first + 2 * kLanes <= width)
        return at::vec::deinterleave2(Vec::loadu(row + first), Vec::loadu(row + first + kLanes))
            .first;
    }
    alignas(64) scalar_t buffer[kLanes];
    for (int64_t j = 0; j < kLanes; ++j) {
      const int64_t pos = first + j * stride;
      buffer[j] = j >= lanes ? scalar_t(0) : (pos >= 0 && pos < width ? row[pos] : -kInf);
    }
    return Vec::loadu(buffer);
  }

  // row[first + j * stride] += value[j] for the lanes inside the row.
  static void add_columns(scalar_t* row, int64_t width, int64_t first, int64_t stride,
                          int64_t lanes, const Vec& value) {
    if (lanes == kLanes && first >= 0) {
      if (stride == 1 && first + kLanes <= width) {
        (Vec::loadu(row + first) + value).store(row + first);
        return;
      }
      if (stride == 2 && first + 2 * kLanes <= width) {
        auto [even, odd] =
            at::vec::deinterleave2(Vec::loadu(row + first), Vec::loadu(row + first + kLanes));
        auto [low, high] = at::vec::interleave2(even + value, odd);
        low.store(row + first);
        high.store(row + first + kLanes);
        return;
      }
    }
    alignas(64) scalar_t buffer[kLanes];
    value.store(buffer);
    for (int64_t j = 0; j < lanes; ++j) {
      const int64_t pos = first + j * stride;
      if (pos >= 0 && pos < width) row[pos] += buffer[j];
    }
  }

  // Calls f(cell index, input row or nullptr if the row is padding, kw) for
  // each cell of the windows of output row (od, oh), in window.h's order.
  template <typename Row, typename F>
  static void for_each_row_cell(Row* plane, const int64_t* strides, const PoolGeometry& g,
                                int64_t od, int64_t oh, F&& f) {
    int64_t i = 0;
    for (int64_t kd = 0; kd < g.kernel[0]; ++kd) {
      const int64_t d = od * g.stride[0] - g.padding[0] + kd;
      for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
        const int64_t h = oh * g.stride[1] - g.padding[1] + kh;
        const bool inside = d >= 0 && d < g.input[0] && h >= 0 && h < g.input[1];
        Row* row = inside ? plane + d * strides[0] + h * strides[1] : nullptr;
        for (int64_t kw = 0; kw < g.kernel[2]; ++kw) f(i++, row, kw);
      }
    }
  }

  // With stride 2, cells kw and kw + 1 (kw even) of the lanes' windows are the
  // even and odd elements of one block of 2 * kLanes: one deinterleave (or
  // interleave) serves both.
  static bool pair_fits(int64_t width, int64_t first, int64_t stride, int64_t lanes) {
    return stride == 2 && lanes == kLanes && first >= 0 && first + 2 * kLanes <= width;
  }

  static void load_row_cells(const scalar_t* plane, const int64_t* xs, const PoolGeometry& g,
                             int64_t od, int64_t oh, int64_t ow0, int64_t lanes, Vec* cells) {
    const int64_t first = ow0 * g.stride[2] - g.padding[2];
    for_each_row_cell(plane, xs, g, od, oh, [&](int64_t i, const scalar_t* row, int64_t kw) {
      if (!row) {
        cells[i] = Vec(-kInf);
      } else if (kw % 2 == 1 && pair_fits(g.input[2], first + kw - 1, g.stride[2], lanes)) {
        // loaded with cell kw - 1
      } else if (kw % 2 == 0 && kw + 1 < g.kernel[2] &&
                 pair_fits(g.input[2], first + kw, g.stride[2], lanes)) {
        std::tie(cells[i], cells[i + 1]) = at::vec::deinterleave2(
            Vec::loadu(row + first + kw), Vec::loadu(row + first + kw + kLanes));
      } else {
        cells[i] = load_columns(row, g.input[2], first + kw, g.stride[2], lanes);
      }
    });
  }

  static void forward_rows(const at::Tensor& input5, at::Tensor& output5, at::Tensor& log_norm5,
                           const PoolGeometry& g) {
    const scalar_t* x = input5.const_data_ptr<scalar_t>();
    scalar_t* y = output5.mutable_data_ptr<scalar_t>();
    scalar_t* ln = log_norm5.mutable_data_ptr<scalar_t>();
    const int64_t channels = input5.size(1), count = cell_count(g);
    const int64_t xs[2] = {input5.stride(2), input5.stride(3)};
    const int64_t rows = input5.size(0) * channels * g.output[0] * g.output[1];
    at::parallel_for(0, rows, grain_for(g.output[2] * count), [&](int64_t begin, int64_t end) {
      Vec cells[kMax];
      for (int64_t row = begin; row < end; ++row) {
        const int64_t oh = row % g.output[1];
        const int64_t od = (row / g.output[1]) % g.output[0];
        const int64_t plane = row / (g.output[1] * g.output[0]);
        const int64_t n = plane / channels, c = plane % channels;
        const scalar_t* xp = x + n * input5.stride(0) + c * input5.stride(1);
        scalar_t* y_row = y + window_offset(output5, n, c, od, oh, 0);
        scalar_t* ln_row = ln + window_offset(log_norm5, n, c, od, oh, 0);
        for (int64_t ow0 = 0; ow0 < g.output[2]; ow0 += kLanes) {
          const int64_t lanes = std::min(kLanes, g.output[2] - ow0);
          load_row_cells(xp, xs, g, od, oh, ow0, lanes, cells);
          Vec out, log_norm;
          forward(cells, count, out, log_norm);
          out.store(y_row + ow0, lanes);
          log_norm.store(ln_row + ow0, lanes);
        }
      }
    });
  }

  // One thread per (sample, channel) plane, windows in a fixed order:
  // deterministic sums where windows overlap.
  static void backward_rows(const at::Tensor& grad5, const at::Tensor& input5,
                            const at::Tensor& log_norm5, at::Tensor& grad_input5,
                            const PoolGeometry& g) {
    const scalar_t* x = input5.const_data_ptr<scalar_t>();
    const scalar_t* gy = grad5.const_data_ptr<scalar_t>();
    const scalar_t* ln = log_norm5.const_data_ptr<scalar_t>();
    scalar_t* dx = grad_input5.mutable_data_ptr<scalar_t>();
    const int64_t channels = input5.size(1), count = cell_count(g);
    const int64_t xs[3] = {input5.stride(2), input5.stride(3), 1};
    const int64_t ds[3] = {grad_input5.stride(2), grad_input5.stride(3), 1};
    const int64_t grad_column_stride = grad5.stride(4);  // 0 for an expanded gradient
    const int64_t plane_work = g.output[0] * g.output[1] * g.output[2] * count;
    at::parallel_for(0, input5.size(0) * channels, grain_for(plane_work), [&](int64_t begin,
                                                                              int64_t end) {
      Vec cells[kMax], cell_grads[kMax];
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t n = plane / channels, c = plane % channels;
        const scalar_t* xp = x + n * input5.stride(0) + c * input5.stride(1);
        scalar_t* dxp = dx + n * grad_input5.stride(0) + c * grad_input5.stride(1);
        // Zeroed here rather than beforehand: the plane is then in cache.
        std::fill_n(dxp, g.input[0] * g.input[1] * g.input[2], scalar_t(0));
        for (int64_t od = 0; od < g.output[0]; ++od)
          for (int64_t oh = 0; oh < g.output[1]; ++oh) {
            const scalar_t* g_row = gy + window_offset(grad5, n, c, od, oh, 0);
            const scalar_t* ln_row = ln + window_offset(log_norm5, n, c, od, oh, 0);
            for (int64_t ow0 = 0; ow0 < g.output[2]; ow0 += kLanes) {
              const int64_t lanes = std::min(kLanes, g.output[2] - ow0);
              load_row_cells(xp, xs, g, od, oh, ow0, lanes, cells);
              const Vec grad =
                  load_strided(g_row + ow0 * grad_column_stride, grad_column_stride, lanes);
              const Vec log_norm = Vec::loadu(ln_row + ow0, lanes);
              if (!backward(cells, count, grad, log_norm, cell_grads)) {
                for (int64_t ow = ow0; ow < ow0 + lanes; ++ow)
                  add_window_gradient<scalar_t>(xp, xs, dxp, ds, window_at(g, od, oh, ow),
                                                g_row[ow * grad_column_stride], ln_row[ow]);
                continue;
              }
              const int64_t first = ow0 * g.stride[2] - g.padding[2];
              for_each_row_cell(dxp, ds, g, od, oh, [&](int64_t i, scalar_t* row, int64_t kw) {
                if (!row) return;  // padding
                if (kw % 2 == 1 && pair_fits(g.input[2], first + kw - 1, g.stride[2], lanes))
                  return;  // added with cell kw - 1
                if (kw % 2 == 0 && kw + 1 < g.kernel[2] &&
                    pair_fits(g.input[2], first + kw, g.stride[2], lanes)) {
                  scalar_t* block = row + first + kw;
                  auto [low, high] = at::vec::interleave2(cell_grads[i], cell_grads[i + 1]);
                  (Vec::loadu(block) + low).store(block);
                  (Vec::loadu(block + kLanes) + high).store(block + kLanes);
                  return;
                }
                add_columns(row, g.input[2], first + kw, g.stride[2], lanes, cell_grads[i]);
              });
            }
          }
      }
    });
  }

  // ---- channels_last: lanes are channels c0 .. c0 + lanes - 1 ----

  // Calls f(cell index, offset of the cell or -1 if it is padding) for each
  // cell of window (od, oh, ow), in window.h's order.
  template <typename F>
  static void for_each_channel_cell(const int64_t* strides, const PoolGeometry& g, int64_t od,
                                    int64_t oh, int64_t ow, F&& f) {
    const int64_t index[3] = {od, oh, ow};
    int64_t start[3];
    for (int d = 0; d < 3; ++d) start[d] = index[d] * g.stride[d] - g.padding[d];
    int64_t i = 0;
    for (int64_t d = start[0]; d < start[0] + g.kernel[0]; ++d)
      for (int64_t h = start[1]; h < start[1] + g.kernel[1]; ++h)
        for (int64_t w = start[2]; w < start[2] + g.kernel[2]; ++w) {
          const bool inside = d >= 0 && d < g.input[0] && h >= 0 && h < g.input[1] && w >= 0 &&
                              w < g.input[2];
          f(i++, inside ? d * strides[0] + h * strides[1] + w * strides[2] : int64_t(-1));
        }
  }

  static void forward_channels(const at::Tensor& input5, at::Tensor& output5,
                               at::Tensor& log_norm5, const PoolGeometry& g) {
    const scalar_t* x = input5.const_data_ptr<scalar_t>();
    scalar_t* y = output5.mutable_data_ptr<scalar_t>();
    scalar_t* ln = log_norm5.mutable_data_ptr<scalar_t>();
    const int64_t channels = input5.size(1), count = cell_count(g);
    const int64_t xs[3] = {input5.stride(2), input5.stride(3), input5.stride(4)};
    const int64_t rows = input5.size(0) * g.output[0] * g.output[1];
    const int64_t row_work = g.output[2] * channels * count;
    at::parallel_for(0, rows, grain_for(row_work), [&](int64_t begin, int64_t end) {
      Vec cells[kMax];
      for (int64_t row = begin; row < end; ++row) {
        const int64_t oh = row % g.output[1];
        const int64_t od = (row / g.output[1]) % g.output[0];
        const int64_t n = row / (g.output[1] * g.output[0]);
        for (int64_t ow = 0; ow < g.output[2]; ++ow)
          for (int64_t c0 = 0; c0 < channels; c0 += kLanes) {
            const int64_t lanes = std::min(kLanes, channels - c0);
            const scalar_t* xp = x + n * input5.stride(0) + c0;
            for_each_channel_cell(xs, g, od, oh, ow, [&](int64_t i, int64_t offset) {
              cells[i] = offset >= 0 ? Vec::loadu(xp + offset, lanes) : Vec(-kInf);
            });
            Vec out, log_norm;
            forward(cells, count, out, log_norm);
            out.store(y + window_offset(output5, n, c0, od, oh, ow), lanes);
            log_norm.store(ln + window_offset(log_norm5, n, c0, od, oh, ow), lanes);
          }
      }
    });
  }

  // One thread per (sample, block of channels), windows in a fixed order.
  static void backward_channels(const at::Tensor& grad5, const at::Tensor& input5,
                                const at::Tensor& log_norm5, at::Tensor& grad_input5,
                                const PoolGeometry& g) {
    const scalar_t* x = input5.const_data_ptr<scalar_t>();
    const scalar_t* gy = grad5.const_data_ptr<scalar_t>();
    const scalar_t* ln = log_norm5.const_data_ptr<scalar_t>();
    scalar_t* dx = grad_input5.mutable_data_ptr<scalar_t>();
    const int64_t channels = input5.size(1), count = cell_count(g);
    const int64_t blocks = (channels + kLanes - 1) / kLanes;
    const int64_t xs[3] = {input5.stride(2), input5.stride(3), input5.stride(4)};
    const int64_t ds[3] = {grad_input5.stride(2), grad_input5.stride(3), grad_input5.stride(4)};
    const int64_t grad_channel_stride = grad5.stride(1);
    const int64_t block_work = g.output[0] * g.output[1] * g.output[2] * kLanes * count;
    at::parallel_for(0, input5.size(0) * blocks, grain_for(block_work), [&](int64_t begin,
                                                                            int64_t end) {
      Vec cells[kMax], cell_grads[kMax];
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / blocks, c0 = (item % blocks) * kLanes;
        const int64_t lanes = std::min(kLanes, channels - c0);
        const scalar_t* xp = x + n * input5.stride(0) + c0;
        scalar_t* dxp = dx + n * grad_input5.stride(0) + c0;
        for (int64_t i = 0; i < g.input[0] * g.input[1] * g.input[2]; ++i)
          Vec(0).store(dxp + i * grad_input5.stride(4), lanes);  // dense channels_last
        for (int64_t od = 0; od < g.output[0]; ++od)
          for (int64_t oh = 0; oh < g.output[1]; ++oh)
            for (int64_t ow = 0; ow < g.output[2]; ++ow) {
              const scalar_t* g_at = gy + window_offset(grad5, n, c0, od, oh, ow);
              const scalar_t* ln_at = ln + window_offset(log_norm5, n, c0, od, oh, ow);
              for_each_channel_cell(xs, g, od, oh, ow, [&](int64_t i, int64_t offset) {
                cells[i] = offset >= 0 ? Vec::loadu(xp + offset, lanes) : Vec(-kInf);
              });
              const Vec grad = load_strided(g_at, grad_channel_stride, lanes);
              if (!backward(cells, count, grad, Vec::loadu(ln_at, lanes), cell_grads)) {
                const Window w = window_at(g, od, oh, ow);
                for (int64_t j = 0; j < lanes; ++j)
                  add_window_gradient<scalar_t>(xp + j, xs, dxp + j, ds, w,
                                                g_at[j * grad_channel_stride], ln_at[j]);
                continue;
              }
              for_each_channel_cell(ds, g, od, oh, ow, [&](int64_t i, int64_t offset) {
                if (offset < 0) return;  // padding
                (Vec::loadu(dxp + offset, lanes) + cell_grads[i]).store(dxp + offset, lanes);
              });
            }
      }
    });
  }
};

enum class Layout { kRows, kChannels, kNone };

// Which vectorised kernel fits. Output, log_norm and gradient are allocated in
// `format`, so they are contiguous along W (rows) or C (channels) too.
Layout vector_layout(const at::Tensor& input5, const PoolGeometry& g, at::MemoryFormat format) {
  const auto dtype = input5.scalar_type();
  if ((dtype != at::kFloat && dtype != at::kDouble) ||
      g.kernel[0] * g.kernel[1] * g.kernel[2] > kMaxVectorCells)
    return Layout::kNone;
  if (format == at::MemoryFormat::Contiguous && input5.stride(4) == 1) return Layout::kRows;
  if (format != at::MemoryFormat::Contiguous && input5.stride(1) == 1) return Layout::kChannels;
  return Layout::kNone;
}

// Calls f(VecSoftPool<scalar_t, K>{}) with K the window size for the common
// 2x2 and 3x3 windows (compile-time loops), else K = 0.
template <typename scalar_t, typename F>
void with_cell_count(const PoolGeometry& g, F&& f) {
  switch (g.kernel[0] * g.kernel[1] * g.kernel[2]) {
    case 4:
      return f(VecSoftPool<scalar_t, 4>{});
    case 9:
      return f(VecSoftPool<scalar_t, 9>{});
    default:
      return f(VecSoftPool<scalar_t, 0>{});
  }
}

}  // namespace

bool forward_vectorized(const at::Tensor& input5, at::Tensor& output5, at::Tensor& log_norm5,
                        const PoolGeometry& g, at::MemoryFormat format) {
  const Layout layout = vector_layout(input5, g, format);
  if (layout == Layout::kNone) return false;
  AT_DISPATCH_FLOATING_TYPES(input5.scalar_type(), "soft_pool_forward_vectorized", [&] {
    with_cell_count<scalar_t>(g, [&](auto kernel) {
      if (layout == Layout::kRows)
        decltype(kernel)::forward_rows(input5, output5, log_norm5, g);
      else
        decltype(kernel)::forward_channels(input5, output5, log_norm5, g);
    });
  });
  return true;
}

bool backward_vectorized(const at::Tensor& grad5, const at::Tensor& input5,
                         const at::Tensor& log_norm5, at::Tensor& grad_input5,
                         const PoolGeometry& g, at::MemoryFormat format) {
  const Layout layout = vector_layout(input5, g, format);
  if (layout == Layout::kNone) return false;
  AT_DISPATCH_FLOATING_TYPES(input5.scalar_type(), "soft_pool_backward_vectorized", [&] {
    with_cell_count<scalar_t>(g, [&](auto kernel) {
      if (layout == Layout::kRows)
        decltype(kernel)::backward_rows(grad5, input5, log_norm5, grad_input5, g);
      else
        decltype(kernel)::backward_channels(grad5, input5, log_norm5, grad_input5, g);
    });
  });
  return true;
}

}  // namespace mmsoftpool

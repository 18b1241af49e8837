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

#include "soft_pool_cpu.h"

namespace mmsoftpool {

namespace {

using at::vec::Vectorized;

template <typename scalar_t>
struct VecSoftPool {
  using Vec = Vectorized<scalar_t>;
  static constexpr int64_t kLanes = Vec::size();
  static constexpr scalar_t kInf = std::numeric_limits<scalar_t>::infinity();

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
    Vec d[kMaxVectorCells], weight[kMaxVectorCells];
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

  // Both cells of k = 2, s = 2 windows at once: row[first + 2j] += even[j] and
  // row[first + 2j + 1] += odd[j], one interleaved load and store.
  static void add_column_pairs(scalar_t* row, int64_t width, int64_t first, int64_t lanes,
                               const Vec& even, const Vec& odd) {
    if (lanes == kLanes && first >= 0 && first + 2 * kLanes <= width) {
      auto [low, high] = at::vec::interleave2(even, odd);
      (Vec::loadu(row + first) + low).store(row + first);
      (Vec::loadu(row + first + kLanes) + high).store(row + first + kLanes);
      return;
    }
    add_columns(row, width, first, 2, lanes, even);
    add_columns(row, width, first + 1, 2, lanes, odd);
  }

  // The cells of the windows of row (od, oh), columns from ow0, in window.h's
  // order (D, H, W). Rows of the window that lie in the padding are left out.
  static int64_t row_cells(const scalar_t* plane, const int64_t* xs, const PoolGeometry& g,
                           int64_t od, int64_t oh, int64_t ow0, int64_t lanes, Vec* cells) {
    const Window w = window_at(g, od, oh, 0);  // D and H extent of the row's windows
    const int64_t first = ow0 * g.stride[2] - g.padding[2];
    int64_t count = 0;
    for (int64_t d = w.begin[0]; d < w.end[0]; ++d)
      for (int64_t h = w.begin[1]; h < w.end[1]; ++h)
        for (int64_t kw = 0; kw < g.kernel[2]; ++kw)
          cells[count++] = load_columns(plane + d * xs[0] + h * xs[1], g.input[2], first + kw,
                                        g.stride[2], lanes);
    return count;
  }

  static void forward_rows(const at::Tensor& input5, at::Tensor& output5, at::Tensor& log_norm5,
                           const PoolGeometry& g) {
    const scalar_t* x = input5.const_data_ptr<scalar_t>();
    scalar_t* y = output5.mutable_data_ptr<scalar_t>();
    scalar_t* ln = log_norm5.mutable_data_ptr<scalar_t>();
    const int64_t channels = input5.size(1);
    const int64_t xs[3] = {input5.stride(2), input5.stride(3), 1};
    const int64_t rows = input5.size(0) * channels * g.output[0] * g.output[1];
    const int64_t row_work = g.output[2] * g.kernel[0] * g.kernel[1] * g.kernel[2];
    at::parallel_for(0, rows, grain_for(row_work), [&](int64_t begin, int64_t end) {
      Vec cells[kMaxVectorCells];
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
          const int64_t count = row_cells(xp, xs, g, od, oh, ow0, lanes, cells);
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
    const int64_t channels = input5.size(1);
    const int64_t xs[3] = {input5.stride(2), input5.stride(3), 1};
    const int64_t ds[3] = {grad_input5.stride(2), grad_input5.stride(3), 1};
    const int64_t grad_column_stride = grad5.stride(4);  // 0 for an expanded gradient
    const int64_t plane_work = g.output[0] * g.output[1] * g.output[2] * g.kernel[0] *
                               g.kernel[1] * g.kernel[2];
    at::parallel_for(0, input5.size(0) * channels, grain_for(plane_work), [&](int64_t begin,
                                                                              int64_t end) {
      Vec cells[kMaxVectorCells], cell_grads[kMaxVectorCells];
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
            const Window rows = window_at(g, od, oh, 0);
            for (int64_t ow0 = 0; ow0 < g.output[2]; ow0 += kLanes) {
              const int64_t lanes = std::min(kLanes, g.output[2] - ow0);
              const int64_t count = row_cells(xp, xs, g, od, oh, ow0, lanes, cells);
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
              const bool pairs = g.kernel[2] == 2 && g.stride[2] == 2;
              int64_t i = 0;
              for (int64_t d = rows.begin[0]; d < rows.end[0]; ++d)
                for (int64_t h = rows.begin[1]; h < rows.end[1]; ++h) {
                  scalar_t* dx_row = dxp + d * ds[0] + h * ds[1];
                  if (pairs) {
                    add_column_pairs(dx_row, g.input[2], first, lanes, cell_grads[i],
                                     cell_grads[i + 1]);
                    i += 2;
                    continue;
                  }
                  for (int64_t kw = 0; kw < g.kernel[2]; ++kw)
                    add_columns(dx_row, g.input[2], first + kw, g.stride[2], lanes,
                                cell_grads[i++]);
                }
            }
          }
      }
    });
  }

  // ---- channels_last: lanes are channels c0 .. c0 + lanes - 1 ----

  static int64_t channel_cells(const scalar_t* x, const int64_t* xs, const Window& w,
                               int64_t lanes, Vec* cells) {
    int64_t count = 0;
    for (int64_t d = w.begin[0]; d < w.end[0]; ++d)
      for (int64_t h = w.begin[1]; h < w.end[1]; ++h)
        for (int64_t q = w.begin[2]; q < w.end[2]; ++q)
          cells[count++] = Vec::loadu(x + d * xs[0] + h * xs[1] + q * xs[2], lanes);
    return count;
  }

  static void forward_channels(const at::Tensor& input5, at::Tensor& output5,
                               at::Tensor& log_norm5, const PoolGeometry& g) {
    const scalar_t* x = input5.const_data_ptr<scalar_t>();
    scalar_t* y = output5.mutable_data_ptr<scalar_t>();
    scalar_t* ln = log_norm5.mutable_data_ptr<scalar_t>();
    const int64_t channels = input5.size(1);
    const int64_t xs[3] = {input5.stride(2), input5.stride(3), input5.stride(4)};
    const int64_t rows = input5.size(0) * g.output[0] * g.output[1];
    const int64_t row_work = g.output[2] * channels * g.kernel[0] * g.kernel[1] * g.kernel[2];
    at::parallel_for(0, rows, grain_for(row_work), [&](int64_t begin, int64_t end) {
      Vec cells[kMaxVectorCells];
      for (int64_t row = begin; row < end; ++row) {
        const int64_t oh = row % g.output[1];
        const int64_t od = (row / g.output[1]) % g.output[0];
        const int64_t n = row / (g.output[1] * g.output[0]);
        for (int64_t ow = 0; ow < g.output[2]; ++ow) {
          const Window w = window_at(g, od, oh, ow);
          for (int64_t c0 = 0; c0 < channels; c0 += kLanes) {
            const int64_t lanes = std::min(kLanes, channels - c0);
            const int64_t count =
                channel_cells(x + n * input5.stride(0) + c0, xs, w, lanes, cells);
            Vec out, log_norm;
            forward(cells, count, out, log_norm);
            out.store(y + window_offset(output5, n, c0, od, oh, ow), lanes);
            log_norm.store(ln + window_offset(log_norm5, n, c0, od, oh, ow), lanes);
          }
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
    const int64_t channels = input5.size(1);
    const int64_t blocks = (channels + kLanes - 1) / kLanes;
    const int64_t xs[3] = {input5.stride(2), input5.stride(3), input5.stride(4)};
    const int64_t ds[3] = {grad_input5.stride(2), grad_input5.stride(3), grad_input5.stride(4)};
    const int64_t grad_channel_stride = grad5.stride(1);
    const int64_t block_work = g.output[0] * g.output[1] * g.output[2] * kLanes * g.kernel[0] *
                               g.kernel[1] * g.kernel[2];
    at::parallel_for(0, input5.size(0) * blocks, grain_for(block_work), [&](int64_t begin,
                                                                            int64_t end) {
      Vec cells[kMaxVectorCells], cell_grads[kMaxVectorCells];
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
              const Window w = window_at(g, od, oh, ow);
              const scalar_t* g_at = gy + window_offset(grad5, n, c0, od, oh, ow);
              const scalar_t* ln_at = ln + window_offset(log_norm5, n, c0, od, oh, ow);
              const int64_t count = channel_cells(xp, xs, w, lanes, cells);
              const Vec grad = load_strided(g_at, grad_channel_stride, lanes);
              if (!backward(cells, count, grad, Vec::loadu(ln_at, lanes), cell_grads)) {
                for (int64_t j = 0; j < lanes; ++j)
                  add_window_gradient<scalar_t>(xp + j, xs, dxp + j, ds, w,
                                                g_at[j * grad_channel_stride], ln_at[j]);
                continue;
              }
              int64_t i = 0;
              for (int64_t d = w.begin[0]; d < w.end[0]; ++d)
                for (int64_t h = w.begin[1]; h < w.end[1]; ++h)
                  for (int64_t q = w.begin[2]; q < w.end[2]; ++q) {
                    scalar_t* target = dxp + d * ds[0] + h * ds[1] + q * ds[2];
                    (Vec::loadu(target, lanes) + cell_grads[i++]).store(target, lanes);
                  }
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

}  // namespace

bool forward_vectorized(const at::Tensor& input5, at::Tensor& output5, at::Tensor& log_norm5,
                        const PoolGeometry& g, at::MemoryFormat format) {
  const Layout layout = vector_layout(input5, g, format);
  if (layout == Layout::kNone) return false;
  AT_DISPATCH_FLOATING_TYPES(input5.scalar_type(), "soft_pool_forward_vectorized", [&] {
    if (layout == Layout::kRows)
      VecSoftPool<scalar_t>::forward_rows(input5, output5, log_norm5, g);
    else
      VecSoftPool<scalar_t>::forward_channels(input5, output5, log_norm5, g);
  });
  return true;
}

bool backward_vectorized(const at::Tensor& grad5, const at::Tensor& input5,
                         const at::Tensor& log_norm5, at::Tensor& grad_input5,
                         const PoolGeometry& g, at::MemoryFormat format) {
  const Layout layout = vector_layout(input5, g, format);
  if (layout == Layout::kNone) return false;
  AT_DISPATCH_FLOATING_TYPES(input5.scalar_type(), "soft_pool_backward_vectorized", [&] {
    if (layout == Layout::kRows)
      VecSoftPool<scalar_t>::backward_rows(grad5, input5, log_norm5, grad_input5, g);
    else
      VecSoftPool<scalar_t>::backward_channels(grad5, input5, log_norm5, grad_input5, g);
  });
  return true;
}

}  // namespace mmsoftpool

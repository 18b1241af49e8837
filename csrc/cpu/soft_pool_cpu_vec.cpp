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

#include <array>
#include <limits>
#include <tuple>
#include <vector>

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
    return kCells > 0 ? kCells : g.cells;
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

  // Calls f(cell index, input row d * H + h or -1 if the row is padding, kw)
  // for each cell of the windows of output row (od, oh), in window.h's order.
  template <typename F>
  static void for_each_row_cell(const PoolGeometry& g, int64_t od, int64_t oh, F&& f) {
    int64_t i = 0;
    for (int64_t kd = 0; kd < g.kernel[0]; ++kd) {
      const int64_t d = od * g.stride[0] - g.padding[0] + kd;
      for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
        const int64_t h = oh * g.stride[1] - g.padding[1] + kh;
        const bool inside = d >= 0 && d < g.input[0] && h >= 0 && h < g.input[1];
        const int64_t row = inside ? d * g.input[1] + h : -1;
        for (int64_t kw = 0; kw < g.kernel[2]; ++kw) f(i++, row, kw);
      }
    }
  }

  static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((b - 1 - a) / b); }

  // An input row split by column phase, so that cell kw of kLanes neighbouring
  // windows is one contiguous load whatever the stride and padding: with
  // stride s, input column s * (q - shift) + r is entry q of phase r, and cell
  // kw of the window at output column ow is entry ow + (kw - padding) / s + shift
  // (rounded down) of phase (kw - padding) mod s. Rows are split once and
  // read by every window that overlaps them; the backward accumulates into a
  // split buffer with plain vector adds and merges it back in one pass.
  struct RowPhases {
    int64_t stride, width;
    int64_t shift;   // entries before column 0: the left padding
    int64_t used;    // entries that windows read; columns outside the input are -inf
    int64_t length;  // entries of one phase, up to the last full vector; 0 past `used`
    int64_t cell_entry[kMaxVectorCells];  // kw -> phase * length + entry of ow = 0

    explicit RowPhases(const PoolGeometry& g) : stride(g.stride[2]), width(g.input[2]) {
      const int64_t first = floor_div(-g.padding[2], stride);
      const int64_t last = floor_div(g.kernel[2] - 1 - g.padding[2], stride);
      shift = -first;
      used = g.output[2] + last - first;
      length = (g.output[2] + kLanes - 1) / kLanes * kLanes + last - first;
      for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
        const int64_t a = floor_div(kw - g.padding[2], stride);
        cell_entry[kw] = (kw - g.padding[2] - a * stride) * length + a + shift;
      }
    }

    int64_t size() const { return stride * length; }
    int64_t column(int64_t phase, int64_t q) const { return stride * (q - shift) + phase; }

    // Whether entries q0 .. q0 + kLanes - 1 of every phase are one block of
    // stride * kLanes input columns (stride 1 or 2, the SIMD cases).
    bool whole_block(int64_t q0) const {
      const int64_t c0 = column(0, q0);
      return stride <= 2 && c0 >= 0 && c0 + stride * kLanes <= width && q0 + kLanes <= used;
    }

    void split(const scalar_t* row, scalar_t* out) const {
      for (int64_t q0 = 0; q0 < length; q0 += kLanes) {
        const bool simd = whole_block(q0);
        const scalar_t* block = simd ? row + column(0, q0) : row;  // inside the row only
        if (simd && stride == 1) {
          Vec::loadu(block).store(out + q0);
        } else if (simd) {
          auto [even, odd] = at::vec::deinterleave2(Vec::loadu(block), Vec::loadu(block + kLanes));
          even.store(out + q0);
          odd.store(out + length + q0);
        } else {
          for (int64_t r = 0; r < stride; ++r)
            for (int64_t q = q0; q < std::min(q0 + kLanes, length); ++q) {
              const int64_t c = column(r, q);
              out[r * length + q] = q >= used ? scalar_t(0) : c >= 0 && c < width ? row[c] : -kInf;
            }
        }
      }
    }

    // row[c] = the entry of column c, for every column (0 where no window reaches).
    void merge(const scalar_t* split, scalar_t* row) const {
      for (int64_t q0 = 0; q0 < length; q0 += kLanes) {
        const bool simd = whole_block(q0);
        scalar_t* block = simd ? row + column(0, q0) : row;  // inside the row only
        if (simd && stride == 1) {
          Vec::loadu(split + q0).store(block);
        } else if (simd) {
          auto [low, high] =
              at::vec::interleave2(Vec::loadu(split + q0), Vec::loadu(split + length + q0));
          low.store(block);
          high.store(block + kLanes);
        } else {
          for (int64_t r = 0; r < stride; ++r)
            for (int64_t q = q0; q < std::min(q0 + kLanes, length); ++q) {
              const int64_t c = column(r, q);
              if (c >= 0 && c < width) row[c] = q < used ? split[r * length + q] : scalar_t(0);
            }
        }
      }
      const int64_t past = std::max<int64_t>(0, column(0, length));  // columns past every entry
      if (past < width) std::fill(row + past, row + width, scalar_t(0));
    }
  };

  // Splits every input row of a plane (D * H rows, W contiguous) into `split`.
  static void split_plane(const RowPhases& phases, const scalar_t* plane, const int64_t* strides,
                          const PoolGeometry& g, scalar_t* split) {
    for (int64_t d = 0; d < g.input[0]; ++d)
      for (int64_t h = 0; h < g.input[1]; ++h)
        phases.split(plane + d * strides[0] + h * strides[1],
                     split + (d * g.input[1] + h) * phases.size());
  }

  static void load_row_cells(const RowPhases& phases, const scalar_t* split,
                             const PoolGeometry& g, int64_t od, int64_t oh, int64_t ow0,
                             Vec* cells) {
    for_each_row_cell(g, od, oh, [&](int64_t i, int64_t row, int64_t kw) {
      cells[i] = row < 0 ? Vec(-kInf)
                         : Vec::loadu(split + row * phases.size() + phases.cell_entry[kw] + ow0);
    });
  }

  // One thread per (sample, channel) plane.
  static void forward_rows(const at::Tensor& input5, at::Tensor& output5, at::Tensor& log_norm5,
                           const PoolGeometry& g) {
    const scalar_t* x = input5.const_data_ptr<scalar_t>();
    scalar_t* y = output5.mutable_data_ptr<scalar_t>();
    scalar_t* ln = log_norm5.mutable_data_ptr<scalar_t>();
    const int64_t channels = input5.size(1), count = cell_count(g);
    const int64_t xs[2] = {input5.stride(2), input5.stride(3)};
    const RowPhases phases(g);
    const int64_t plane_work = g.output[0] * g.output[1] * g.output[2] * count;
    at::parallel_for(0, input5.size(0) * channels, grain_for(plane_work), [&](int64_t begin,
                                                                              int64_t end) {
      std::vector<scalar_t> split(g.input[0] * g.input[1] * phases.size());
      Vec cells[kMax];
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t n = plane / channels, c = plane % channels;
        split_plane(phases, x + n * input5.stride(0) + c * input5.stride(1), xs, g, split.data());
        for (int64_t od = 0; od < g.output[0]; ++od)
          for (int64_t oh = 0; oh < g.output[1]; ++oh) {
            scalar_t* y_row = y + element_offset(output5, n, c, od, oh, 0);
            scalar_t* ln_row = ln + element_offset(log_norm5, n, c, od, oh, 0);
            for (int64_t ow0 = 0; ow0 < g.output[2]; ow0 += kLanes) {
              const int64_t lanes = std::min(kLanes, g.output[2] - ow0);
              load_row_cells(phases, split.data(), g, od, oh, ow0, cells);
              Vec out, log_norm;
              forward(cells, count, out, log_norm);
              out.store(y_row + ow0, lanes);
              log_norm.store(ln_row + ow0, lanes);
            }
          }
      }
    });
  }

  // One thread per (sample, channel) plane, windows in a fixed order:
  // deterministic sums where windows overlap. The gradient accumulates in a
  // split buffer; vectors holding a window with a non-finite maximum are left
  // to window.h's scalar path, after the merge.
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
    const RowPhases phases(g);
    const int64_t rows = g.input[0] * g.input[1];
    const int64_t plane_work = g.output[0] * g.output[1] * g.output[2] * count;
    at::parallel_for(0, input5.size(0) * channels, grain_for(plane_work), [&](int64_t begin,
                                                                              int64_t end) {
      std::vector<scalar_t> split(rows * phases.size()), split_grad(rows * phases.size());
      std::vector<std::array<int64_t, 3>> nonfinite;  // (od, oh, ow0) of vectors left over
      Vec cells[kMax], cell_grads[kMax];
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t n = plane / channels, c = plane % channels;
        const scalar_t* xp = x + n * input5.stride(0) + c * input5.stride(1);
        scalar_t* dxp = dx + n * grad_input5.stride(0) + c * grad_input5.stride(1);
        split_plane(phases, xp, xs, g, split.data());
        std::fill(split_grad.begin(), split_grad.end(), scalar_t(0));
        nonfinite.clear();
        for (int64_t od = 0; od < g.output[0]; ++od)
          for (int64_t oh = 0; oh < g.output[1]; ++oh) {
            const scalar_t* g_row = gy + element_offset(grad5, n, c, od, oh, 0);
            const scalar_t* ln_row = ln + element_offset(log_norm5, n, c, od, oh, 0);
            for (int64_t ow0 = 0; ow0 < g.output[2]; ow0 += kLanes) {
              // Lanes past the row get gradient 0 and finite cells, so add 0.
              const int64_t lanes = std::min(kLanes, g.output[2] - ow0);
              load_row_cells(phases, split.data(), g, od, oh, ow0, cells);
              const Vec grad =
                  load_strided(g_row + ow0 * grad_column_stride, grad_column_stride, lanes);
              if (!backward(cells, count, grad, Vec::loadu(ln_row + ow0, lanes), cell_grads)) {
                nonfinite.push_back({od, oh, ow0});
                continue;
              }
              for_each_row_cell(g, od, oh, [&](int64_t i, int64_t row, int64_t kw) {
                if (row < 0) return;  // padding
                scalar_t* at = split_grad.data() + row * phases.size() + phases.cell_entry[kw] + ow0;
                (Vec::loadu(at) + cell_grads[i]).store(at);
              });
            }
          }
        for (int64_t d = 0; d < g.input[0]; ++d)
          for (int64_t h = 0; h < g.input[1]; ++h)
            phases.merge(split_grad.data() + (d * g.input[1] + h) * phases.size(),
                         dxp + d * ds[0] + h * ds[1]);
        for (const auto& [od, oh, ow0] : nonfinite) {
          const scalar_t* g_row = gy + element_offset(grad5, n, c, od, oh, 0);
          const scalar_t* ln_row = ln + element_offset(log_norm5, n, c, od, oh, 0);
          for (int64_t ow = ow0; ow < std::min(ow0 + kLanes, g.output[2]); ++ow)
            add_window_gradient<scalar_t>(xp, xs, dxp, ds, window_at(g, od, oh, ow),
                                          g_row[ow * grad_column_stride], ln_row[ow]);
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
            out.store(y + element_offset(output5, n, c0, od, oh, ow), lanes);
            log_norm.store(ln + element_offset(log_norm5, n, c0, od, oh, ow), lanes);
          }
      }
    });
  }

  // One thread per (sample, group of channels), windows in a fixed order:
  // deterministic sums where windows overlap. A group is as many channels as
  // leave every thread a few items, so that a window's cells are long
  // contiguous runs; with a few samples, groups are narrower.
  static void backward_channels(const at::Tensor& grad5, const at::Tensor& input5,
                                const at::Tensor& log_norm5, at::Tensor& grad_input5,
                                const PoolGeometry& g) {
    const scalar_t* x = input5.const_data_ptr<scalar_t>();
    const scalar_t* gy = grad5.const_data_ptr<scalar_t>();
    const scalar_t* ln = log_norm5.const_data_ptr<scalar_t>();
    scalar_t* dx = grad_input5.mutable_data_ptr<scalar_t>();
    const int64_t samples = input5.size(0), channels = input5.size(1), count = cell_count(g);
    const int64_t blocks = (channels + kLanes - 1) / kLanes;
    const int64_t wanted_groups = (4 * at::get_num_threads() + samples - 1) / samples;
    const int64_t group_blocks = (blocks + wanted_groups - 1) / wanted_groups;
    const int64_t groups = (blocks + group_blocks - 1) / group_blocks;
    const int64_t xs[3] = {input5.stride(2), input5.stride(3), input5.stride(4)};
    const int64_t ds[3] = {grad_input5.stride(2), grad_input5.stride(3), grad_input5.stride(4)};
    const int64_t cells_per_sample = g.input[0] * g.input[1] * g.input[2];
    const int64_t grad_channel_stride = grad5.stride(1);
    const int64_t group_work =
        g.output[0] * g.output[1] * g.output[2] * group_blocks * kLanes * count;
    at::parallel_for(0, samples * groups, grain_for(group_work), [&](int64_t begin, int64_t end) {
      Vec cells[kMax], cell_grads[kMax];
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / groups, group = item % groups;
        const int64_t c_begin = group * group_blocks * kLanes;
        const int64_t c_end = std::min(channels, c_begin + group_blocks * kLanes);
        scalar_t* dx_sample = dx + n * grad_input5.stride(0);
        for (int64_t i = 0; i < cells_per_sample; ++i)  // dense channels_last
          std::fill(dx_sample + i * channels + c_begin, dx_sample + i * channels + c_end,
                    scalar_t(0));
        for (int64_t od = 0; od < g.output[0]; ++od)
          for (int64_t oh = 0; oh < g.output[1]; ++oh)
            for (int64_t ow = 0; ow < g.output[2]; ++ow)
              for (int64_t c0 = c_begin; c0 < c_end; c0 += kLanes) {
                const int64_t lanes = std::min(kLanes, c_end - c0);
                const scalar_t* xp = x + n * input5.stride(0) + c0;
                scalar_t* dxp = dx_sample + c0;
                const scalar_t* g_at = gy + element_offset(grad5, n, c0, od, oh, ow);
                const scalar_t* ln_at = ln + element_offset(log_norm5, n, c0, od, oh, ow);
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

enum class VectorPath { kRows, kChannels, kNone };

// Which vectorised kernel fits. Output, log_norm and gradient are allocated in
// `format`, so they are contiguous along W (rows) or C (channels) too.
VectorPath vector_path(const at::Tensor& input5, const PoolGeometry& g, at::MemoryFormat format) {
  const auto dtype = input5.scalar_type();
  if ((dtype != at::kFloat && dtype != at::kDouble) || g.cells > kMaxVectorCells)
    return VectorPath::kNone;
  // A row split by phase holds `stride` entries an output column: with a
  // stride beyond the cell limit it would be far larger than the row.
  if (format == at::MemoryFormat::Contiguous && input5.stride(4) == 1 &&
      g.stride[2] <= kMaxVectorCells)
    return VectorPath::kRows;
  if (format != at::MemoryFormat::Contiguous && input5.stride(1) == 1) return VectorPath::kChannels;
  return VectorPath::kNone;
}

// Calls f(VecSoftPool<scalar_t, K>{}) with K the window size for the common
// 2x2 and 3x3 windows (compile-time loops), else K = 0.
template <typename scalar_t, typename F>
void with_cell_count(const PoolGeometry& g, F&& f) {
  switch (g.cells) {
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
  const VectorPath path = vector_path(input5, g, format);
  if (path == VectorPath::kNone) return false;
  AT_DISPATCH_FLOATING_TYPES(input5.scalar_type(), "soft_pool_forward_vectorized", [&] {
    with_cell_count<scalar_t>(g, [&](auto kernel) {
      if (path == VectorPath::kRows)
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
  const VectorPath path = vector_path(input5, g, format);
  if (path == VectorPath::kNone) return false;
  AT_DISPATCH_FLOATING_TYPES(input5.scalar_type(), "soft_pool_backward_vectorized", [&] {
    with_cell_count<scalar_t>(g, [&](auto kernel) {
      if (path == VectorPath::kRows)
        decltype(kernel)::backward_rows(grad5, input5, log_norm5, grad_input5, g);
      else
        decltype(kernel)::backward_channels(grad5, input5, log_norm5, grad_input5, g);
    });
  });
  return true;
}

}  // namespace mmsoftpool

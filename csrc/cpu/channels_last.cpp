// Vectorised SoftPool kernels for channels_last inputs (channels contiguous):
// the lanes are neighbouring channels, one load per cell. Compiled once per
// CPU capability (setup.py); the window maths is vec_window.h's.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../vec_window.h"

namespace mmsoftpool {
namespace CPU_CAPABILITY {

namespace {

// Pointers to the cells of a window in one sample from their offsets; padding
// cells point at `padding` (a row of -inf, or one that is only written).
template <typename T>
void cells_at_offsets(T* sample, const int64_t* offsets, int64_t count, T* padding, T** cells) {
  for (int64_t i = 0; i < count; ++i) cells[i] = offsets[i] >= 0 ? sample + offsets[i] : padding;
}

// Parallel over output rows (sample, od, oh). Input and output hold T,
// log_norm scalar_t.
template <typename T, typename K>
void forward(const K&, const at::Tensor& input5, at::Tensor& output5, at::Tensor& log_norm5,
             const PoolGeometry& g) {
  using Vec = typename K::Vec;
  using scalar_t = typename Vec::value_type;
  const T* x = input5.const_data_ptr<T>();
  T* y = output5.mutable_data_ptr<T>();
  scalar_t* ln = log_norm5.mutable_data_ptr<scalar_t>();
  const int64_t channels = input5.size(1), count = K::cell_count(g);
  const int64_t xs[3] = {input5.stride(2), input5.stride(3), input5.stride(4)};
  const int64_t rows = input5.size(0) * g.output[0] * g.output[1];
  at::parallel_for(0, rows, grain_for(g.output[2] * channels, count),
                   [&](int64_t begin, int64_t end) {
                     Vec cells[K::kMax];
                     int64_t offsets[kMaxVectorCells];
                     const T* cell_at[kMaxVectorCells];
                     const std::vector<T> padding(channels, -K::kInf);
                     for (int64_t row = begin; row < end; ++row) {
                       const int64_t oh = row % g.output[1];
                       const int64_t od = (row / g.output[1]) % g.output[0];
                       const int64_t n = row / (g.output[1] * g.output[0]);
                       const T* x_sample = x + n * input5.stride(0);
                       for (int64_t ow = 0; ow < g.output[2]; ++ow) {
                         window_cells(xs, g, od, oh, ow, offsets);
                         cells_at_offsets(x_sample, offsets, count, padding.data(), cell_at);
                         T* y_at = y + element_offset(output5, n, 0, od, oh, ow);
                         scalar_t* ln_at = ln + element_offset(log_norm5, n, 0, od, oh, ow);
                         for (int64_t c0 = 0; c0 < channels; c0 += K::kLanes) {
                           const int64_t lanes = std::min(K::kLanes, channels - c0);
                           for (int64_t i = 0; i < count; ++i)
                             cells[i] = load_widened(cell_at[i] + c0, lanes);
                           Vec out, log_norm;
                           K::forward(cells, count, out, log_norm);
                           store_rounded(out, y_at + c0, lanes);
                           log_norm.store(ln_at + c0, lanes);
                         }
                       }
                     }
                   });
}

// Whether input position i along a dimension lies in some window.
std::vector<uint8_t> covered(int64_t size, int64_t kernel, int64_t stride, int64_t padding,
                             int64_t windows) {
  std::vector<uint8_t> in_window(size);
  for (int64_t i = 0; i < size; ++i) {
    int64_t first, last;
    covering_windows(i, kernel, stride, padding, windows, first, last);
    in_window[i] = first <= last;
  }
  return in_window;
}

// One thread per (sample, group of channels), windows in a fixed order:
// deterministic sums where windows overlap. A group is as many channels as
// leave every thread a few items, so that a window's cells are long contiguous
// runs. Each cell's gradient is stored by the first window reaching it and
// added by the later ones, so the gradient is written once, with no zeroing
// pass; cells no window reaches are zeroed. Input and output gradient hold T,
// log_norm scalar_t, the input gradient G. A is where the sums are made: G, or
// (a reduced G where windows overlap) a float32 buffer of the item's cells,
// rounded once into the input gradient when the item ends, so that no
// input-sized float32 gradient is needed.
template <typename T, typename G, typename A, typename K>
void backward(const K&, const at::Tensor& grad5, const at::Tensor& input5,
              const at::Tensor& log_norm5, at::Tensor& grad_input5, const PoolGeometry& g) {
  using Vec = typename K::Vec;
  using scalar_t = typename Vec::value_type;
  constexpr bool kBuffered = !std::is_same_v<A, G>;
  const T* x = input5.const_data_ptr<T>();
  const T* gy = grad5.const_data_ptr<T>();
  const scalar_t* ln = log_norm5.const_data_ptr<scalar_t>();
  G* dx = grad_input5.mutable_data_ptr<G>();
  const int64_t samples = input5.size(0), channels = input5.size(1), count = K::cell_count(g);
  const int64_t blocks = (channels + K::kLanes - 1) / K::kLanes;
  const int64_t wanted_groups = (4 * at::get_num_threads() + samples - 1) / samples;
  const int64_t group_blocks = (blocks + wanted_groups - 1) / wanted_groups;
  const int64_t groups = (blocks + group_blocks - 1) / group_blocks;
  const int64_t xs[3] = {input5.stride(2), input5.stride(3), input5.stride(4)};
  const int64_t ds[3] = {grad_input5.stride(2), grad_input5.stride(3), grad_input5.stride(4)};
  const int64_t grad_channel_stride = grad5.stride(1);
  std::vector<uint8_t> in_window[3];
  bool all_covered = true;
  for (int a = 0; a < 3; ++a) {
    in_window[a] = covered(g.input[a], g.kernel[a], g.stride[a], g.padding[a], g.output[a]);
    all_covered = all_covered && std::all_of(in_window[a].begin(), in_window[a].end(),
                                             [](uint8_t v) { return v != 0; });
  }
  const int64_t group_work =
      g.output[0] * g.output[1] * g.output[2] * group_blocks * K::kLanes * count;
  const int64_t cells_in_sample = g.input[0] * g.input[1] * g.input[2];
  at::parallel_for(0, samples * groups, grain_for(group_work), [&](int64_t begin, int64_t end) {
    Vec cells[K::kMax], cell_grads[K::kMax];
    int64_t x_offsets[kMaxVectorCells], dx_offsets[kMaxVectorCells];
    const T* cell_at[kMaxVectorCells];
    A* grad_at[kMaxVectorCells];
    bool first[kMaxVectorCells];
    const std::vector<T> padding(channels, -K::kInf);
    std::vector<A> padding_grad(channels);  // padding cells' gradients: written, never read
    std::vector<A> buffer(kBuffered ? cells_in_sample * group_blocks * K::kLanes : 0);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / groups, group = item % groups;
      const int64_t c_begin = group * group_blocks * K::kLanes;
      const int64_t c_end = std::min(channels, c_begin + group_blocks * K::kLanes);
      const T* x_sample = x + n * input5.stride(0);
      G* dx_sample = dx + n * grad_input5.stride(0);
      // the sums: in the input gradient, or in the buffer, (d, h, w, channel
      // of the group) dense, zeroed (cells no window reaches stay 0)
      A* sums = nullptr;
      int64_t sum_strides[3], channel_base = 0;
      if constexpr (kBuffered) {
        const int64_t width = c_end - c_begin;
        sum_strides[0] = g.input[1] * g.input[2] * width;
        sum_strides[1] = g.input[2] * width;
        sum_strides[2] = width;
        sums = buffer.data();
        channel_base = c_begin;
        std::fill(buffer.begin(), buffer.begin() + cells_in_sample * width, A(0));
      } else {
        std::copy(ds, ds + 3, sum_strides);
        sums = dx_sample;
      }
      if (!kBuffered && !all_covered)
        for (int64_t d = 0; d < g.input[0]; ++d)
          for (int64_t h = 0; h < g.input[1]; ++h)
            for (int64_t w = 0; w < g.input[2]; ++w)
              if (!(in_window[0][d] && in_window[1][h] && in_window[2][w])) {
                A* at = sums + d * ds[0] + h * ds[1] + w * ds[2];
                std::fill(at + c_begin, at + c_end, A(0));
              }
      for (int64_t od = 0; od < g.output[0]; ++od)
        for (int64_t oh = 0; oh < g.output[1]; ++oh)
          for (int64_t ow = 0; ow < g.output[2]; ++ow) {
            window_cells(xs, g, od, oh, ow, x_offsets);
            window_cells(sum_strides, g, od, oh, ow, dx_offsets, first);
            cells_at_offsets(x_sample, x_offsets, count, padding.data(), cell_at);
            cells_at_offsets(sums, dx_offsets, count, padding_grad.data(), grad_at);
            for (int64_t c0 = c_begin; c0 < c_end; c0 += K::kLanes) {
              const int64_t lanes = std::min(K::kLanes, c_end - c0);
              const T* dy_at = gy + element_offset(grad5, n, c0, od, oh, ow);
              const scalar_t* ln_at = ln + element_offset(log_norm5, n, c0, od, oh, ow);
              for (int64_t i = 0; i < count; ++i) cells[i] = load_widened(cell_at[i] + c0, lanes);
              const Vec grad = load_strided(dy_at, grad_channel_stride, lanes);
              if (!K::backward(cells, count, grad, Vec::loadu(ln_at, lanes), cell_grads)) {
                // the lanes: one window in neighbouring channels
                const int64_t index[3] = {od, oh, ow}, same_window[3] = {0, 0, 0};
                K::backward_by_lane(x_sample + c0, 1, xs, g, index, same_window, lanes, dy_at,
                                    grad_channel_stride, ln_at, cell_grads);
              }
              for (int64_t i = 0; i < count; ++i) {
                A* at = grad_at[i] + (c0 - channel_base);
                store_rounded(first[i] ? cell_grads[i] : load_widened(at, lanes) + cell_grads[i],
                              at, lanes);
              }
            }
          }
      if constexpr (kBuffered) {  // each cell's sum rounded once
        const A* sum = buffer.data();
        for (int64_t d = 0; d < g.input[0]; ++d)
          for (int64_t h = 0; h < g.input[1]; ++h)
            for (int64_t w = 0; w < g.input[2]; ++w, sum += c_end - c_begin) {
              G* at = dx_sample + d * ds[0] + h * ds[1] + w * ds[2];
              for (int64_t c0 = c_begin; c0 < c_end; c0 += K::kLanes) {
                const int64_t lanes = std::min(K::kLanes, c_end - c0);
                store_rounded(Vec::loadu(sum + (c0 - c_begin), lanes), at + c0, lanes);
              }
            }
      }
    }
  });
}

}  // namespace

void forward_channels(const at::Tensor& input5, at::Tensor& output5, at::Tensor& log_norm5,
                      const PoolGeometry& g) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, input5.scalar_type(), "soft_pool_forward_channels", [&] {
        with_cell_count<compute_t<scalar_t>>(
            g, [&](auto kernel) { forward<scalar_t>(kernel, input5, output5, log_norm5, g); });
      });
}

void backward_channels(const at::Tensor& grad5, const at::Tensor& input5,
                       const at::Tensor& log_norm5, at::Tensor& grad_input5,
                       const PoolGeometry& g) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, input5.scalar_type(), "soft_pool_backward_channels", [&] {
        using G = scalar_t;  // soft_pool_cpu.cpp: channels_last gradients hold the input's type
        TORCH_INTERNAL_ASSERT(grad_input5.scalar_type() == input5.scalar_type());
        with_cell_count<compute_t<scalar_t>>(g, [&](auto kernel) {
          if (kWidened<scalar_t> && !windows_disjoint(g))
            backward<scalar_t, G, compute_t<scalar_t>>(kernel, grad5, input5, log_norm5,
                                                       grad_input5, g);
          else
            backward<scalar_t, G, G>(kernel, grad5, input5, log_norm5, grad_input5, g);
        });
      });
}

}  // namespace CPU_CAPABILITY
}  // namespace mmsoftpool

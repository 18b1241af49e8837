// The CUDA path of SoftPool, written once over an executor.
//
// Each kernel is a loop body: a host-and-device function of the index of the
// element it writes. The wrappers below (geometry, allocation, 5-D layouts, the
// window-statistics buffer, the order of the passes) hand the bodies to an
// executor, which runs body(index) for every index in [0, total):
//   - soft_pool_cuda.cu: CudaExecutor launches a grid-stride kernel over the
//     body; that is the op on a GPU;
//   - csrc/cpu/cuda_path.cpp: CpuExecutor runs the same bodies on the CPU; the
//     private test ops _cuda_path_forward / _cuda_path_backward, compiled into
//     every build, so that all of this but the launch is tested without a GPU.
// The grid (blocks_for, grid_thread, grid_threads, grid_stride_loop) is here
// too, as plain functions, for the same reason.
//
// Elements are numbered in the memory order of the tensor a body writes (W
// fastest for contiguous tensors, C fastest for channels_last), so neighbouring
// GPU threads touch neighbouring addresses. The backward is a gather: a first
// pass computes each window's statistics, a second gives each input cell the
// sum over the windows covering it, so no atomics and a deterministic sum.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cstdint>
#include <tuple>

#include "../soft_pool.h"
#include "../window.h"

namespace mmsoftpool {
namespace cuda_path {

// The grid. Threads a block; blocks_for caps the grid at 32 blocks a
// multiprocessor (the grid-stride loop does the rest), so a launch stays
// within CUDA's limits for any size.
constexpr int64_t kThreads = 256;
constexpr int64_t kBlocksPerMultiprocessor = 32;

inline int64_t blocks_for(int64_t total, int64_t multiprocessors) {
  const int64_t max_blocks = std::max<int64_t>(1, multiprocessors) * kBlocksPerMultiprocessor;
  return std::max<int64_t>(1, std::min<int64_t>((total + kThreads - 1) / kThreads, max_blocks));
}

// A thread's number in the grid and the grid's size, in 64 bits: CUDA's
// blockIdx, blockDim and gridDim are 32-bit, and their products overflow.
C10_HOST_DEVICE inline int64_t grid_thread(uint32_t block, uint32_t block_dim, uint32_t thread) {
  return static_cast<int64_t>(block) * block_dim + thread;
}

C10_HOST_DEVICE inline int64_t grid_threads(uint32_t block_dim, uint32_t grid_dim) {
  return static_cast<int64_t>(block_dim) * grid_dim;
}

// The indices one thread handles: thread, thread + threads, ... below total.
template <typename F>
C10_HOST_DEVICE inline void grid_stride_loop(int64_t thread, int64_t threads, int64_t total,
                                             F&& f) {
  for (int64_t index = thread; index < total; index += threads) f(index);
}

// Sizes and strides of a 5-D (N, C, D, H, W) tensor and the order in which
// indices number its elements, passed to the bodies by value.
struct Strided5d {
  int64_t size[5];
  int64_t stride[5];
  bool channels_last;  // numbering order of the indices

  Strided5d(const at::Tensor& t5, at::MemoryFormat format)
      : channels_last(format != at::MemoryFormat::Contiguous) {
    for (int i = 0; i < 5; ++i) {
      size[i] = t5.size(i);
      stride[i] = t5.stride(i);
    }
  }

  // The (n, c, d, h, w) of the index-th element in memory order.
  C10_HOST_DEVICE void position(int64_t index, int64_t (&p)[5]) const {
    if (channels_last) {
      p[1] = index % size[1];
      index /= size[1];
    }
    for (int i = 4; i >= 2; --i) {
      p[i] = index % size[i];
      index /= size[i];
    }
    if (!channels_last) {
      p[1] = index % size[1];
      index /= size[1];
    }
    p[0] = index;
  }

  C10_HOST_DEVICE int64_t offset(const int64_t (&p)[5]) const {
    return p[0] * stride[0] + p[1] * stride[1] + p[2] * stride[2] + p[3] * stride[3] +
           p[4] * stride[4];
  }

  C10_HOST_DEVICE int64_t plane_offset(const int64_t (&p)[5]) const {
    return p[0] * stride[0] + p[1] * stride[1];
  }

  // The spatial (D, H, W) strides, as window.h takes them.
  C10_HOST_DEVICE void spatial_strides(int64_t (&s)[3]) const {
    s[0] = stride[2];
    s[1] = stride[3];
    s[2] = stride[4];
  }
};

// A body's pointer member as a __restrict__ local of the same name: nvcc
// ignores __restrict__ on members, and with it on locals reads through the
// read-only data cache (ld.global.nc), as for a kernel's __restrict__
// parameters. Sound: what a body writes is freshly allocated, aliased by no
// other pointer.
#define MMSOFTPOOL_RESTRICT_LOCAL(member) auto* __restrict__ const member = this->member

// Forward: output and log_norm of the index-th window.
template <typename scalar_t, typename acc_t>
struct ForwardBody {
  const scalar_t* x;
  Strided5d xl;
  scalar_t* y;
  acc_t* log_norm;
  Strided5d yl;  // output and log_norm share one layout
  PoolGeometry g;

  C10_HOST_DEVICE void operator()(int64_t index) const {
    MMSOFTPOOL_RESTRICT_LOCAL(x);
    MMSOFTPOOL_RESTRICT_LOCAL(y);
    MMSOFTPOOL_RESTRICT_LOCAL(log_norm);
    int64_t p[5];
    yl.position(index, p);
    int64_t xs[3];
    xl.spatial_strides(xs);
    acc_t out, norm;
    window_forward<acc_t>(x + xl.plane_offset(p), window_at(g, p[2], p[3], p[4]), xs, out, norm);
    const int64_t o = yl.offset(p);
    y[o] = static_cast<scalar_t>(out);
    log_norm[o] = norm;
  }
};

// Backward, first pass: the statistics of the index-th window, stored at the
// window's log_norm offset (yl is dense, so the buffer has no holes).
template <typename scalar_t, typename acc_t>
struct WindowStatsBody {
  const scalar_t* x;
  Strided5d xl;
  const acc_t* log_norm;
  Strided5d yl;
  WindowGradStats<acc_t>* stats;
  PoolGeometry g;

  C10_HOST_DEVICE void operator()(int64_t index) const {
    MMSOFTPOOL_RESTRICT_LOCAL(x);
    MMSOFTPOOL_RESTRICT_LOCAL(log_norm);
    MMSOFTPOOL_RESTRICT_LOCAL(stats);
    int64_t p[5];
    yl.position(index, p);
    int64_t xs[3];
    xl.spatial_strides(xs);
    const int64_t o = yl.offset(p);
    stats[o] = window_grad_stats<acc_t>(x + xl.plane_offset(p), window_at(g, p[2], p[3], p[4]), xs,
                                        log_norm[o]);
  }
};

// Backward, second pass: the index-th input cell gathers from its covering
// windows, in (d, h, w) order, and rounds once.
template <typename scalar_t, typename acc_t>
struct GatherBody {
  const scalar_t* grad_output;
  Strided5d gl;
  const WindowGradStats<acc_t>* stats;
  Strided5d yl;  // the statistics' layout
  const scalar_t* x;
  Strided5d xl;
  scalar_t* grad_input;
  Strided5d dl;
  PoolGeometry g;

  C10_HOST_DEVICE void operator()(int64_t index) const {
    MMSOFTPOOL_RESTRICT_LOCAL(grad_output);
    MMSOFTPOOL_RESTRICT_LOCAL(stats);
    MMSOFTPOOL_RESTRICT_LOCAL(x);
    MMSOFTPOOL_RESTRICT_LOCAL(grad_input);
    int64_t p[5];
    dl.position(index, p);
    const acc_t v = static_cast<acc_t>(x[xl.offset(p)]);
    int64_t first[3], last[3];
    for (int d = 0; d < 3; ++d)
      covering_windows(p[2 + d], g.kernel[d], g.stride[d], g.padding[d], g.output[d], first[d],
                       last[d]);
    acc_t sum = 0;
    int64_t q[5] = {p[0], p[1], 0, 0, 0};
    for (q[2] = first[0]; q[2] <= last[0]; ++q[2])
      for (q[3] = first[1]; q[3] <= last[1]; ++q[3])
        for (q[4] = first[2]; q[4] <= last[2]; ++q[4])
          sum +=
              cell_gradient(v, static_cast<acc_t>(grad_output[gl.offset(q)]), stats[yl.offset(q)]);
    grad_input[dl.offset(p)] = static_cast<scalar_t>(sum);
  }
};

#undef MMSOFTPOOL_RESTRICT_LOCAL

// The forward over an executor `run`: run(total, body) calls body(index) for
// every index in [0, total).
template <typename Executor>
std::tuple<at::Tensor, at::Tensor> forward(const Executor& run, const at::Tensor& input,
                                           c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                                           c10::IntArrayRef padding, bool ceil_mode) {
  const PoolGeometry g = make_geometry(input, kernel_size, stride, padding, ceil_mode);
  at::Tensor output, log_norm;
  std::tie(output, log_norm) = empty_forward_outputs(input, g);
  const int64_t total = output.numel();
  if (total == 0) return {output, log_norm};
  const auto format = pooling_memory_format(input);
  const Strided5d xl(as_5d(input), format), yl(as_5d(output), format);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "soft_pool_forward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        run(total, ForwardBody<scalar_t, acc_t>{input.const_data_ptr<scalar_t>(), xl,
                                                output.mutable_data_ptr<scalar_t>(),
                                                log_norm.mutable_data_ptr<acc_t>(), yl, g});
      });
  return {output, log_norm};
}

// The backward over an executor: the statistics pass, then the gather.
template <typename Executor>
at::Tensor backward(const Executor& run, const at::Tensor& grad_output, const at::Tensor& input,
                    const at::Tensor& log_norm, c10::IntArrayRef kernel_size,
                    c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode) {
  const PoolGeometry g =
      make_backward_geometry(grad_output, input, log_norm, kernel_size, stride, padding, ceil_mode);
  const auto format = pooling_memory_format(input);
  at::Tensor grad_input = at::empty(input.sizes(), input.options().memory_format(format));
  if (grad_output.numel() == 0 || input.numel() == 0) return grad_input.zero_();
  // The window statistics are laid out like log_norm made dense (in its own
  // layout): one entry a window, at the window's log_norm offset.
  const auto window_format = log_norm.suggest_memory_format();
  const at::Tensor log_norm_dense = log_norm.contiguous(window_format);
  const Strided5d xl(as_5d(input), format), dl(as_5d(grad_input), format),
      gl(as_5d(grad_output), window_format), yl(as_5d(log_norm_dense), window_format);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "soft_pool_backward", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        using Stats = WindowGradStats<acc_t>;
        const int64_t windows = log_norm_dense.numel();
        at::Tensor stats_buffer = at::empty({windows * static_cast<int64_t>(sizeof(Stats))},
                                            input.options().dtype(at::kByte));
        auto* stats = reinterpret_cast<Stats*>(stats_buffer.mutable_data_ptr<uint8_t>());
        const scalar_t* x = input.const_data_ptr<scalar_t>();
        run(windows, WindowStatsBody<scalar_t, acc_t>{x, xl, log_norm_dense.const_data_ptr<acc_t>(),
                                                      yl, stats, g});
        run(input.numel(),
            GatherBody<scalar_t, acc_t>{grad_output.const_data_ptr<scalar_t>(), gl, stats, yl, x,
                                        xl, grad_input.mutable_data_ptr<scalar_t>(), dl, g});
      });
  return grad_input;
}

}  // namespace cuda_path
}  // namespace mmsoftpool

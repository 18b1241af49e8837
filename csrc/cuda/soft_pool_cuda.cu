// SoftPool CUDA kernels. The arithmetic of a window is in window.h, shared
// with the CPU kernels.
//
// Threads are numbered in the memory order of the tensor they write (W fastest
// for contiguous tensors, C fastest for channels_last), so neighbouring threads
// touch neighbouring addresses. Grid-stride loops with 64-bit indices keep the
// grid within CUDA's limits for any size. The backward is a gather: a first
// kernel computes each window's statistics, a second gives each input cell
// the sum over the windows covering it, so no atomics and a deterministic sum.
#include <torch/library.h>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <tuple>

#include "../soft_pool.h"
#include "../window.h"

namespace mmsoftpool {

namespace {

constexpr int kThreads = 256;

// Sizes and strides of a 5-D (N, C, D, H, W) tensor and the order in which
// threads number its elements, passed to the kernels by value.
struct Strided5d {
  int64_t size[5];
  int64_t stride[5];
  bool channels_last;  // numbering order of the threads

  explicit Strided5d(const at::Tensor& t5, at::MemoryFormat format)
      : channels_last(format != at::MemoryFormat::Contiguous) {
    for (int i = 0; i < 5; ++i) {
      size[i] = t5.size(i);
      stride[i] = t5.stride(i);
    }
  }

  // The (n, c, d, h, w) of the index-th element in memory order.
  __device__ void position(int64_t index, int64_t (&p)[5]) const {
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

  __device__ int64_t offset(const int64_t (&p)[5]) const {
    return p[0] * stride[0] + p[1] * stride[1] + p[2] * stride[2] + p[3] * stride[3] +
           p[4] * stride[4];
  }

  __device__ int64_t plane_offset(const int64_t (&p)[5]) const {
    return p[0] * stride[0] + p[1] * stride[1];
  }
};

int64_t blocks_for(int64_t n) {
  const int64_t max_blocks =
      static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  return std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, max_blocks));
}

#define GRID_STRIDE_LOOP(index, total)                                             \
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; \
       index < (total); index += static_cast<int64_t>(blockDim.x) * gridDim.x)

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, Strided5d xl,
                               scalar_t* __restrict__ y, acc_t* __restrict__ log_norm,
                               Strided5d yl, PoolGeometry g, int64_t total) {
  const int64_t xs[3] = {xl.stride[2], xl.stride[3], xl.stride[4]};
  GRID_STRIDE_LOOP(index, total) {
    int64_t p[5];
    yl.position(index, p);
    acc_t out, norm;
    window_forward<acc_t>(x + xl.plane_offset(p), window_at(g, p[2], p[3], p[4]), xs, out,
                          norm);
    const int64_t o = yl.offset(p);  // output and log_norm share one layout
    y[o] = static_cast<scalar_t>(out);
    log_norm[o] = norm;
  }
}

// Backward, first pass: the statistics of each window.
template <typename scalar_t, typename acc_t>
__global__ void window_stats_kernel(const scalar_t* __restrict__ x, Strided5d xl,
                                    const acc_t* __restrict__ log_norm, Strided5d yl,
                                    WindowGradStats<acc_t>* __restrict__ stats, PoolGeometry g,
                                    int64_t total) {
  const int64_t xs[3] = {xl.stride[2], xl.stride[3], xl.stride[4]};
  GRID_STRIDE_LOOP(index, total) {
    int64_t p[5];
    yl.position(index, p);
    const int64_t o = yl.offset(p);
    stats[o] = window_grad_stats<acc_t>(x + xl.plane_offset(p), window_at(g, p[2], p[3], p[4]),
                                        xs, log_norm[o]);
  }
}

// Backward, second pass: each input cell gathers from its covering windows.
template <typename scalar_t, typename acc_t>
__global__ void gather_kernel(const scalar_t* __restrict__ grad_output, Strided5d gl,
                              const WindowGradStats<acc_t>* __restrict__ stats, Strided5d yl,
                              const scalar_t* __restrict__ x, Strided5d xl,
                              scalar_t* __restrict__ grad_input, Strided5d dl, PoolGeometry g,
                              int64_t total) {
  GRID_STRIDE_LOOP(index, total) {
    int64_t p[5];
    dl.position(index, p);
    const acc_t v = static_cast<acc_t>(x[xl.offset(p)]);
    int64_t first[3], last[3];
    for (int d = 0; d < 3; ++d)
      covering_windows(p[2 + d], g.kernel[d], g.stride[d], g.padding[d], g.output[d],
                       first[d], last[d]);
    acc_t sum = 0;
    int64_t q[5] = {p[0], p[1], 0, 0, 0};
    for (q[2] = first[0]; q[2] <= last[0]; ++q[2])
      for (q[3] = first[1]; q[3] <= last[1]; ++q[3])
        for (q[4] = first[2]; q[4] <= last[2]; ++q[4])
          sum += cell_gradient(v, static_cast<acc_t>(grad_output[gl.offset(q)]),
                               stats[yl.offset(q)]);
    grad_input[dl.offset(p)] = static_cast<scalar_t>(sum);
  }
}

std::tuple<at::Tensor, at::Tensor> soft_pool_forward_cuda(const at::Tensor& input,
                                                          c10::IntArrayRef kernel_size,
                                                          c10::IntArrayRef stride,
                                                          c10::IntArrayRef padding,
                                                          bool ceil_mode) {
  const PoolGeometry g = make_geometry(input, kernel_size, stride, padding, ceil_mode);
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor output, log_norm;
  std::tie(output, log_norm) = empty_forward_outputs(input, g);
  const int64_t total = output.numel();
  if (total == 0) return {output, log_norm};
  const auto format = pooling_memory_format(input);
  const Strided5d xl(as_5d(input), format), yl(as_5d(output), format);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "soft_pool_forward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        forward_kernel<scalar_t, acc_t>
            <<<blocks_for(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
                input.const_data_ptr<scalar_t>(), xl, output.mutable_data_ptr<scalar_t>(),
                log_norm.mutable_data_ptr<acc_t>(), yl, g, total);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return {output, log_norm};
}

at::Tensor soft_pool_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                   const at::Tensor& log_norm, c10::IntArrayRef kernel_size,
                                   c10::IntArrayRef stride, c10::IntArrayRef padding,
                                   bool ceil_mode) {
  const PoolGeometry g =
      make_backward_geometry(grad_output, input, log_norm, kernel_size, stride, padding, ceil_mode);
  const c10::cuda::CUDAGuard guard(input.device());
  const auto format = pooling_memory_format(input);
  at::Tensor grad_input = at::empty(input.sizes(), input.options().memory_format(format));
  if (grad_output.numel() == 0 || input.numel() == 0) return grad_input.zero_();
  // The window statistics are laid out like log_norm (dense, the output's layout).
  const auto window_format = log_norm.suggest_memory_format();
  const at::Tensor log_norm_dense = log_norm.contiguous(window_format);
  const Strided5d xl(as_5d(input), format), dl(as_5d(grad_input), format),
      gl(as_5d(grad_output), window_format), yl(as_5d(log_norm_dense), window_format);
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, input.scalar_type(), "soft_pool_backward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        using Stats = WindowGradStats<acc_t>;
        const int64_t windows = log_norm_dense.numel();
        at::Tensor stats_buffer = at::empty({windows * static_cast<int64_t>(sizeof(Stats))},
                                            input.options().dtype(at::kByte));
        auto* stats_ptr = reinterpret_cast<Stats*>(stats_buffer.mutable_data_ptr<uint8_t>());
        window_stats_kernel<scalar_t, acc_t><<<blocks_for(windows), kThreads, 0, stream>>>(
            input.const_data_ptr<scalar_t>(), xl, log_norm_dense.const_data_ptr<acc_t>(), yl,
            stats_ptr, g, windows);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        gather_kernel<scalar_t, acc_t><<<blocks_for(input.numel()), kThreads, 0, stream>>>(
            grad_output.const_data_ptr<scalar_t>(), gl, stats_ptr, yl,
            input.const_data_ptr<scalar_t>(), xl, grad_input.mutable_data_ptr<scalar_t>(), dl,
            g, input.numel());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_IMPL(mmsoftpool, CUDA, m) {
  m.impl("soft_pool_forward", &soft_pool_forward_cuda);
  m.impl("soft_pool_backward", &soft_pool_backward_cuda);
}

}  // namespace mmsoftpool

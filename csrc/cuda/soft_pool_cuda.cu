// SoftPool CUDA kernels: the bodies and wrappers of soft_pool_cuda.h run by a
// grid-stride kernel. The arithmetic of a window is in window.h, shared with
// the CPU kernels; csrc/cpu/cuda_path.cpp runs the same wrappers on the CPU.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "soft_pool_cuda.h"

namespace mmsoftpool {

namespace {

// Grid-stride loops with 64-bit indices keep the grid within CUDA's limits
// for any size (soft_pool_cuda.h: blocks_for). No __launch_bounds__: with it
// ptxas spilled the float64 gather's registers.
template <typename Body>
__global__ void grid_stride_kernel(const Body body, int64_t total) {
  cuda_path::grid_stride_loop(cuda_path::grid_thread(blockIdx.x, blockDim.x, threadIdx.x),
                              cuda_path::grid_threads(blockDim.x, gridDim.x), total, body);
}

// Launches a body over [0, total) on the current device's current stream.
struct CudaExecutor {
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  int64_t multiprocessors = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;

  template <typename Body>
  void operator()(int64_t total, const Body& body) const {
    grid_stride_kernel<Body>
        <<<cuda_path::blocks_for(total, multiprocessors), cuda_path::kThreads, 0, stream>>>(body,
                                                                                            total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

std::tuple<at::Tensor, at::Tensor> soft_pool_forward_cuda(const at::Tensor& input,
                                                          c10::IntArrayRef kernel_size,
                                                          c10::IntArrayRef stride,
                                                          c10::IntArrayRef padding,
                                                          bool ceil_mode) {
  const c10::cuda::CUDAGuard guard(input.device());
  return cuda_path::forward(CudaExecutor{}, input, kernel_size, stride, padding, ceil_mode);
}

at::Tensor soft_pool_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                   const at::Tensor& log_norm, c10::IntArrayRef kernel_size,
                                   c10::IntArrayRef stride, c10::IntArrayRef padding,
                                   bool ceil_mode) {
  const c10::cuda::CUDAGuard guard(input.device());
  return cuda_path::backward(CudaExecutor{}, grad_output, input, log_norm, kernel_size, stride,
                             padding, ceil_mode);
}

}  // namespace

TORCH_LIBRARY_IMPL(mmsoftpool, CUDA, m) {
  m.impl("soft_pool_forward", &soft_pool_forward_cuda);
  m.impl("soft_pool_backward", &soft_pool_backward_cuda);
}

}  // namespace mmsoftpool

// The CUDA path's wrappers and loop bodies (csrc/cuda/soft_pool_cuda.h) run on
// the CPU, in every build: private test ops, so that the CUDA wrapper's logic
// (numbering in memory order, offsets of every layout, the statistics buffer,
// the gather, the grid arithmetic) is tested where there is no GPU. Only the
// launch itself and the device's arithmetic (its exp and log, contractions)
// differ on a GPU.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../cuda/soft_pool_cuda.h"

namespace mmsoftpool {

namespace {

// Runs a body over [0, total) with at::parallel_for; each index is a window,
// or a cell's covering windows: a few to a few hundred steps.
struct CpuExecutor {
  static constexpr int64_t kGrain = 256;

  template <typename Body>
  void operator()(int64_t total, const Body& body) const {
    at::parallel_for(0, total, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t index = begin; index < end; ++index) body(index);
    });
  }
};

std::tuple<at::Tensor, at::Tensor> cuda_path_forward_cpu(const at::Tensor& input,
                                                         c10::IntArrayRef kernel_size,
                                                         c10::IntArrayRef stride,
                                                         c10::IntArrayRef padding, bool ceil_mode) {
  return cuda_path::forward(CpuExecutor{}, input, kernel_size, stride, padding, ceil_mode);
}

at::Tensor cuda_path_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                  const at::Tensor& log_norm, c10::IntArrayRef kernel_size,
                                  c10::IntArrayRef stride, c10::IntArrayRef padding,
                                  bool ceil_mode) {
  return cuda_path::backward(CpuExecutor{}, grad_output, input, log_norm, kernel_size, stride,
                             padding, ceil_mode);
}

// Where the CUDA path's index-th element of t lies (its offset), for every
// index, in the numbering of t's pooling layout (Strided5d::position): index i
// of a dense tensor must be at offset i, so that neighbouring GPU threads
// touch neighbouring addresses. Outputs cannot show this: any one-to-one
// numbering gives the same results.
at::Tensor cuda_path_numbering_cpu(const at::Tensor& t) {
  TORCH_CHECK(t.dim() >= 3 && t.dim() <= 5, "_cuda_path_numbering: t must be 3-D to 5-D, got ",
              t.sizes());
  const cuda_path::Strided5d layout(as_5d(t), pooling_memory_format(t));
  at::Tensor offsets = at::empty({t.numel()}, at::kLong);
  int64_t* out = offsets.mutable_data_ptr<int64_t>();
  CpuExecutor{}(t.numel(), [&](int64_t index) {
    int64_t p[5];
    layout.position(index, p);
    out[index] = layout.offset(p);
  });
  return offsets;
}

// The grid of a launch over `total` elements on a device with that many
// multiprocessors, without a device: the blocks blocks_for gives, and for each
// thread number asked for, what its grid-stride loop visits (count, first and
// last index; -1 for none), through the kernel's own grid_thread and
// grid_stride_loop.
std::tuple<int64_t, at::Tensor> cuda_path_grid(int64_t total, int64_t multiprocessors,
                                               c10::IntArrayRef threads) {
  TORCH_CHECK(total >= 0, "_cuda_path_grid: total must be >= 0, got ", total);
  TORCH_CHECK(multiprocessors >= 1, "_cuda_path_grid: multiprocessors must be >= 1, got ",
              multiprocessors);
  const int64_t blocks = cuda_path::blocks_for(total, multiprocessors);
  const int64_t grid_threads = cuda_path::grid_threads(cuda_path::kThreads, blocks);
  // Each thread's loop is walked: keep a call short.
  TORCH_CHECK(threads.empty() || total / grid_threads < (int64_t{1} << 24),
              "_cuda_path_grid: ", total, " elements would take over 2**24 iterations a thread");
  at::Tensor visits = at::empty({static_cast<int64_t>(threads.size()), 3}, at::kLong);
  auto v = visits.accessor<int64_t, 2>();
  for (size_t i = 0; i < threads.size(); ++i) {
    TORCH_CHECK(threads[i] >= 0 && threads[i] < grid_threads, "_cuda_path_grid: thread ",
                threads[i], " is not in the grid of ", grid_threads, " threads");
    // What the kernel reads from blockIdx.x and threadIdx.x.
    const auto block = static_cast<uint32_t>(threads[i] / cuda_path::kThreads);
    const auto lane = static_cast<uint32_t>(threads[i] % cuda_path::kThreads);
    int64_t count = 0, first = -1, last = -1;
    cuda_path::grid_stride_loop(cuda_path::grid_thread(block, cuda_path::kThreads, lane),
                                grid_threads, total, [&](int64_t index) {
                                  if (count++ == 0) first = index;
                                  last = index;
                                });
    v[i][0] = count;
    v[i][1] = first;
    v[i][2] = last;
  }
  return {blocks, visits};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mmsoftpool, m) {
  m.def(
      "_cuda_path_forward(Tensor input, int[] kernel_size, int[] stride, int[] padding, "
      "bool ceil_mode) -> (Tensor, Tensor)");
  m.def(
      "_cuda_path_backward(Tensor grad_output, Tensor input, Tensor log_norm, "
      "int[] kernel_size, int[] stride, int[] padding, bool ceil_mode) -> Tensor");
  m.def("_cuda_path_numbering(Tensor t) -> Tensor");
  m.def("_cuda_path_grid(int total, int multiprocessors, int[] threads) -> (int, Tensor)",
        &cuda_path_grid);
}

TORCH_LIBRARY_IMPL(mmsoftpool, CPU, m) {
  m.impl("_cuda_path_forward", &cuda_path_forward_cpu);
  m.impl("_cuda_path_backward", &cuda_path_backward_cpu);
  m.impl("_cuda_path_numbering", &cuda_path_numbering_cpu);
}

}  // namespace mmsoftpool

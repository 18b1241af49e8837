// Internal to the CPU kernels: what the generic kernels (soft_pool_cpu.cpp)
// and the vectorised ones of each CPU capability share.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/TensorIterator.h>  // at::internal::GRAIN_SIZE
#include <ATen/core/Tensor.h>
#include <c10/util/safe_numerics.h>

#include <algorithm>

#include "../soft_pool.h"
#include "../window.h"

namespace mmsoftpool {

// at::parallel_for grain for items that cost `steps` elementary steps `times`
// times (a product that saturates: windows can have up to 2**63 - 1 cells).
inline int64_t grain_for(int64_t steps, int64_t times = 1) {
  int64_t work;
  if (c10::mul_overflows(std::max<int64_t>(1, steps), std::max<int64_t>(1, times), &work)) return 1;
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / work);
}

// The offset, in elements, of element (n, c, d, h, w) of a 5-D tensor.
inline int64_t element_offset(const at::Tensor& t5, int64_t n, int64_t c, int64_t d, int64_t h,
                              int64_t w) {
  return n * t5.stride(0) + c * t5.stride(1) + d * t5.stride(2) + h * t5.stride(3) +
         w * t5.stride(4);
}

// Whether no two windows share a cell.
inline bool windows_disjoint(const PoolGeometry& g) {
  for (int d = 0; d < 3; ++d)
    if (g.kernel[d] > g.stride[d]) return false;
  return true;
}

// Whether the rows kernel's backward (csrc/cpu/rows.cpp) writes each input
// row back into the input gradient from one chunk pass only, up to the rows two
// chunks share, which it sums in float32 itself: then a bfloat16 or float16
// gradient is written directly, rounded once. Not where windows overlap along
// D while D is chunked: a row then re-enters its slot for the next depth.
inline bool rows_backward_rounds_once(const PoolGeometry& g) {
  return !(g.output[0] > 1 && g.kernel[0] > g.stride[0]);
}

// Vectorised kernels for float and double inputs that are contiguous along W
// (csrc/cpu/rows.cpp: SIMD over output columns) or channels_last
// (csrc/cpu/channels_last.cpp: SIMD over channels), for windows of at most
// kMaxVectorCells cells. `format` is the layout of the input, output, log_norm
// and input gradient; the backward kernels write every gradient cell.
constexpr int64_t kMaxVectorCells = 32;

// The signatures of the vectorised kernels and of the exponential and
// logarithm they share (exposed for tests/test_cpu_dispatch.py).
using ForwardKernel = void(const at::Tensor& input5, at::Tensor& output5, at::Tensor& log_norm5,
                           const PoolGeometry& g);
using BackwardKernel = void(const at::Tensor& grad5, const at::Tensor& input5,
                            const at::Tensor& log_norm5, at::Tensor& grad_input5,
                            const PoolGeometry& g);
using FloatMap = void(const float* in, float* out, int64_t size);

// The one list of the kernels each capability build defines:
// X(capability, name, type) for each.
#define MMSOFTPOOL_FOR_EACH_VECTOR_KERNEL(X, capability) \
  X(capability, forward_rows, ForwardKernel)             \
  X(capability, backward_rows, BackwardKernel)           \
  X(capability, forward_channels, ForwardKernel)         \
  X(capability, backward_channels, BackwardKernel)       \
  X(capability, exp_nonpositive, FloatMap)               \
  X(capability, log_normaliser, FloatMap)

// The kernel files are compiled once per CPU capability, as ATen's are, into
// namespaces named after it (setup.py); soft_pool_cpu.cpp picks one at run
// time from at::get_cpu_capability(), which honours ATEN_CPU_CAPABILITY.
#define MMSOFTPOOL_DECLARE_KERNEL(capability, name, type) type name;
#define MMSOFTPOOL_DECLARE_VECTOR_KERNELS(capability)                      \
  namespace capability {                                                   \
  MMSOFTPOOL_FOR_EACH_VECTOR_KERNEL(MMSOFTPOOL_DECLARE_KERNEL, capability) \
  }

MMSOFTPOOL_DECLARE_VECTOR_KERNELS(DEFAULT)
#ifdef MMSOFTPOOL_X86_CAPABILITIES
MMSOFTPOOL_DECLARE_VECTOR_KERNELS(AVX2)
MMSOFTPOOL_DECLARE_VECTOR_KERNELS(AVX512)
#endif

}  // namespace mmsoftpool

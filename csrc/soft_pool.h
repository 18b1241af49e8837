// SoftPool: shared declarations of the operator library.
//
// Every op works on a 5-D (N, C, D, H, W) strided view of its tensors: 1-D and
// 2-D pooling use unit leading spatial dimensions, so one implementation per
// device serves 1-D, 2-D and 3-D.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <tuple>
#include <vector>

namespace mmsoftpool {

// Window geometry along the three spatial dimensions (D, H, W).
struct PoolGeometry {
  int64_t input[3];
  int64_t output[3];
  int64_t kernel[3];
  int64_t stride[3];
  int64_t padding[3];
  int64_t cells;  // cells of a window, kernel[0] * kernel[1] * kernel[2]
};

// Validates the arguments (like PyTorch's pooling, with error messages naming
// them) and returns the geometry, 1-D/2-D problems lifted to 3-D. The Python
// functions check the same rules first, with ValueErrors; these checks guard
// direct torch.ops calls, before any size arithmetic can overflow.
PoolGeometry make_geometry(const at::Tensor& input, c10::IntArrayRef kernel_size,
                           c10::IntArrayRef stride, c10::IntArrayRef padding,
                           bool ceil_mode);

// The output shape (N, C, *spatial) for the original number of spatial dims.
std::vector<int64_t> output_shape(const at::Tensor& input, const PoolGeometry& g);

// The backward's checks beyond make_geometry: grad_output and log_norm have
// the output's shape, grad_output the input's dtype, log_norm the
// accumulation type.
void check_backward_arguments(const at::Tensor& grad_output, const at::Tensor& input,
                              const at::Tensor& log_norm, const PoolGeometry& g);

// A (N, C, D, H, W) view of a (N, C, *spatial) tensor.
at::Tensor as_5d(const at::Tensor& tensor);

// The layout max_pool gives its output (channels_last kept), used for the
// output, the saved normaliser and the input gradient alike.
at::MemoryFormat pooling_memory_format(const at::Tensor& input);

// Forward: returns (output, log_norm) where log_norm = log(sum_R exp(x - max_R x))
// per window, in the accumulation type, saved for the backward.
std::tuple<at::Tensor, at::Tensor> soft_pool_forward_cpu(
    const at::Tensor& input, c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
    c10::IntArrayRef padding, bool ceil_mode);
at::Tensor soft_pool_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                  const at::Tensor& log_norm, c10::IntArrayRef kernel_size,
                                  c10::IntArrayRef stride, c10::IntArrayRef padding,
                                  bool ceil_mode);

// Index range of the windows along one dimension covering input position i.
C10_HOST_DEVICE inline void covering_windows(int64_t i, int64_t kernel, int64_t stride, int64_t padding,
                             int64_t num_windows, int64_t& first, int64_t& last) {
  const int64_t shifted = i + padding;  // position in the padded input
  first = shifted < kernel ? 0 : (shifted - kernel) / stride + 1;
  last = shifted / stride;
  if (last > num_windows - 1) last = num_windows - 1;
}

}  // namespace mmsoftpool

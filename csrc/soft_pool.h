// SoftPool: shared declarations of the operator library.
//
// Every op works on a 5-D (N, C, D, H, W) strided view of its tensors: 1-D and
// 2-D pooling use unit leading spatial dimensions, so one implementation per
// device serves 1-D, 2-D and 3-D.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <tuple>

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

// The geometry, 1-D/2-D problems lifted to 3-D. Users' calls are checked in
// Python first (mmsoftpool/ops/soft_pool.py owns the rules and the messages);
// these checks are what a direct torch.ops call needs to be memory safe,
// before any size arithmetic can overflow.
PoolGeometry make_geometry(const at::Tensor& input, c10::IntArrayRef kernel_size,
                           c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode);

// make_geometry for the backward, with its own checks: grad_output and
// log_norm have the output's shape and the input's device, grad_output the
// input's dtype, log_norm the accumulation type.
PoolGeometry make_backward_geometry(const at::Tensor& grad_output, const at::Tensor& input,
                                    const at::Tensor& log_norm, c10::IntArrayRef kernel_size,
                                    c10::IntArrayRef stride, c10::IntArrayRef padding,
                                    bool ceil_mode);

// A (N, C, D, H, W) view of a (N, C, *spatial) tensor.
at::Tensor as_5d(const at::Tensor& tensor);

// The layout max_pool gives its output (channels_last kept), used for the
// output, the saved normaliser and the input gradient alike.
at::MemoryFormat pooling_memory_format(const at::Tensor& input);

// The forward's two outputs, uninitialised, in the pooling layout: the output
// in the input's dtype, log_norm (log(sum_R exp(x - max_R x)) per window,
// saved for the backward) in the accumulation type.
std::tuple<at::Tensor, at::Tensor> empty_forward_outputs(const at::Tensor& input,
                                                         const PoolGeometry& g);

}  // namespace mmsoftpool

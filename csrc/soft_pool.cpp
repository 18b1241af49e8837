// SoftPool operator library: the schemas, the geometry and the memory-safety
// checks of direct torch.ops calls, shared allocation, the Python module.
#include "soft_pool.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <Python.h>
#include <c10/util/safe_numerics.h>
#include <torch/library.h>

#include <limits>
#include <vector>

namespace mmsoftpool {

namespace {

// PyTorch's pooling output size: with ceil_mode the last window must start
// inside the input or its left padding.
int64_t pooled_size(int64_t size, int64_t kernel, int64_t stride, int64_t padding, bool ceil_mode) {
  const int64_t span = size + 2 * padding - kernel + (ceil_mode ? stride - 1 : 0);
  // Floor division, also for a negative span (kernel larger than the input).
  int64_t out = (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= size + padding) --out;
  return out;
}

// The output shape (N, C, *spatial) for the original number of spatial dims.
std::vector<int64_t> output_shape(const at::Tensor& input, const PoolGeometry& g) {
  std::vector<int64_t> shape = {input.size(0), input.size(1)};
  for (int64_t d = 5 - input.dim(); d < 3; ++d) shape.push_back(g.output[d]);
  return shape;
}

}  // namespace

PoolGeometry make_geometry(const at::Tensor& input, c10::IntArrayRef kernel_size,
                           c10::IntArrayRef stride, c10::IntArrayRef padding, bool ceil_mode) {
  const int64_t dims = static_cast<int64_t>(kernel_size.size());
  TORCH_CHECK(dims >= 1 && dims <= 3, "soft_pool: kernel_size must have 1, 2 or 3 values, got ",
              kernel_size);
  TORCH_CHECK(static_cast<int64_t>(stride.size()) == dims, "soft_pool: stride ", stride,
              " must have as many values as kernel_size ", kernel_size);
  TORCH_CHECK(static_cast<int64_t>(padding.size()) == dims, "soft_pool: padding ", padding,
              " must have as many values as kernel_size ", kernel_size);
  TORCH_CHECK(input.dim() == dims + 2, "soft_pool: input must be ", dims + 2,
              "-D (N, C, *spatial) for a ", dims, "-D kernel, got input of shape ", input.sizes());
  TORCH_CHECK(at::isFloatingType(input.scalar_type()),
              "soft_pool: input must have a floating-point dtype, got ", input.scalar_type());
  TORCH_CHECK(input.size(1) > 0, "soft_pool: input has no channels, shape ", input.sizes());
  // PyTorch's pooling takes 32-bit ints; with these bounds the size arithmetic
  // below cannot overflow int64 (inputs have fewer than 2**62 cells).
  constexpr int64_t kMaxArgument = std::numeric_limits<int32_t>::max();
  for (int64_t i = 0; i < dims; ++i) {
    TORCH_CHECK(
        kernel_size[i] <= kMaxArgument && stride[i] <= kMaxArgument && padding[i] <= kMaxArgument,
        "soft_pool: kernel_size, stride and padding must be at most 2**31 - 1, got "
        "kernel_size=",
        kernel_size, ", stride=", stride, ", padding=", padding);
  }
  PoolGeometry g;
  g.cells = 1;
  for (int64_t d = 0; d < 3; ++d) {
    const int64_t src = d - (3 - dims);  // index into the arguments, < 0 for lifted dims
    const bool lifted = src < 0;
    g.input[d] = lifted ? 1 : input.size(2 + src);
    g.kernel[d] = lifted ? 1 : kernel_size[src];
    g.stride[d] = lifted ? 1 : stride[src];
    g.padding[d] = lifted ? 0 : padding[src];
    TORCH_CHECK(g.input[d] > 0, "soft_pool: input has an empty spatial dimension, shape ",
                input.sizes());
    TORCH_CHECK(g.kernel[d] > 0, "soft_pool: kernel_size must be positive, got ", kernel_size);
    TORCH_CHECK(g.stride[d] > 0, "soft_pool: stride must be positive, got ", stride);
    TORCH_CHECK(g.padding[d] >= 0 && g.padding[d] <= g.kernel[d] / 2,
                "soft_pool: padding must be between 0 and half the kernel size, got padding=",
                padding, " for kernel_size=", kernel_size);
    TORCH_CHECK(!c10::mul_overflows(g.cells, g.kernel[d], &g.cells),
                "soft_pool: kernel_size=", kernel_size,
                " has more cells a window than int64 can count");
    g.output[d] = pooled_size(g.input[d], g.kernel[d], g.stride[d], g.padding[d], ceil_mode);
    TORCH_CHECK(g.output[d] >= 1, "soft_pool: output size would be < 1 for input of shape ",
                input.sizes(), ", kernel_size=", kernel_size, ", stride=", stride,
                ", padding=", padding);
  }
  return g;
}

PoolGeometry make_backward_geometry(const at::Tensor& grad_output, const at::Tensor& input,
                                    const at::Tensor& log_norm, c10::IntArrayRef kernel_size,
                                    c10::IntArrayRef stride, c10::IntArrayRef padding,
                                    bool ceil_mode) {
  const PoolGeometry g = make_geometry(input, kernel_size, stride, padding, ceil_mode);
  const auto shape = output_shape(input, g);
  TORCH_CHECK(
      grad_output.sizes() == c10::IntArrayRef(shape) && log_norm.sizes() == grad_output.sizes(),
      "soft_pool_backward: grad_output ", grad_output.sizes(), " and log_norm ", log_norm.sizes(),
      " must have the output shape ", shape);
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type() &&
                  log_norm.scalar_type() == at::toOpMathType(input.scalar_type()),
              "soft_pool_backward: unexpected dtypes (grad_output ", grad_output.scalar_type(),
              ", input ", input.scalar_type(), ", log_norm ", log_norm.scalar_type(), ")");
  TORCH_CHECK(grad_output.device() == input.device() && log_norm.device() == input.device(),
              "soft_pool_backward: grad_output (", grad_output.device(), ") and log_norm (",
              log_norm.device(), ") must be on the input's device ", input.device());
  return g;
}

at::Tensor as_5d(const at::Tensor& tensor) {
  at::Tensor view = tensor;
  while (view.dim() < 5) view = view.unsqueeze(2);
  return view;
}

at::MemoryFormat pooling_memory_format(const at::Tensor& input) {
  return input.suggest_memory_format();
}

std::tuple<at::Tensor, at::Tensor> empty_forward_outputs(const at::Tensor& input,
                                                         const PoolGeometry& g) {
  const auto shape = output_shape(input, g);
  const auto options = input.options().memory_format(pooling_memory_format(input));
  return {at::empty(shape, options),
          at::empty(shape, options.dtype(at::toOpMathType(input.scalar_type())))};
}

TORCH_LIBRARY(mmsoftpool, m) {
  m.def(
      "soft_pool_forward(Tensor input, int[] kernel_size, int[] stride, int[] padding, "
      "bool ceil_mode) -> (Tensor, Tensor)");
  m.def(
      "soft_pool_backward(Tensor grad_output, Tensor input, Tensor log_norm, "
      "int[] kernel_size, int[] stride, int[] padding, bool ceil_mode) -> Tensor");
}

}  // namespace mmsoftpool

// An empty Python module: importing mmsoftpool._C loads the library, whose
// static initialisers register the ops with the dispatcher.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}

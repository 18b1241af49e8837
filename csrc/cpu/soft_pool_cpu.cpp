// SoftPool CPU kernels: any strides, 1-D/2-D/3-D through a 5-D view. The
// arithmetic of a window is in window.h, shared with the CUDA kernels.
#include "soft_pool_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/library.h>

#include <string>
#include <tuple>

namespace mmsoftpool {

namespace {

// Adds the gradient of one window (incoming gradient `grad`) to the cells of
// dx_plane, which has the spatial strides ds; x_plane has strides xs.
template <typename acc_t, typename scalar_t>
void add_window_gradient(const scalar_t* x_plane, const int64_t* xs, acc_t* dx_plane,
                         const int64_t* ds, const Window& w, acc_t grad, acc_t log_norm) {
  const auto stats = window_grad_stats<acc_t>(x_plane, w, xs, log_norm);
  for (int64_t d = w.begin[0]; d < w.end[0]; ++d)
    for (int64_t h = w.begin[1]; h < w.end[1]; ++h)
      for (int64_t q = w.begin[2]; q < w.end[2]; ++q) {
        const acc_t v = static_cast<acc_t>(x_plane[d * xs[0] + h * xs[1] + q * xs[2]]);
        dx_plane[d * ds[0] + h * ds[1] + q * ds[2]] += cell_gradient(v, grad, stats);
      }
}

template <typename scalar_t>
void forward_kernel(const at::Tensor& input5, at::Tensor& output5, at::Tensor& log_norm5,
                    const PoolGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* x = input5.const_data_ptr<scalar_t>();
  scalar_t* y = output5.mutable_data_ptr<scalar_t>();
  acc_t* ln = log_norm5.mutable_data_ptr<acc_t>();
  const int64_t channels = input5.size(1);
  const int64_t xs[3] = {input5.stride(2), input5.stride(3), input5.stride(4)};
  const int64_t rows = input5.size(0) * channels * g.output[0] * g.output[1];
  at::parallel_for(0, rows, grain_for(g.output[2], g.cells), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t oh = row % g.output[1];
      const int64_t od = (row / g.output[1]) % g.output[0];
      const int64_t plane = row / (g.output[1] * g.output[0]);
      const int64_t n = plane / channels, c = plane % channels;
      const scalar_t* xp = x + n * input5.stride(0) + c * input5.stride(1);
      for (int64_t ow = 0; ow < g.output[2]; ++ow) {
        acc_t out, log_norm;
        window_forward<acc_t>(xp, window_at(g, od, oh, ow), xs, out, log_norm);
        y[element_offset(output5, n, c, od, oh, ow)] = static_cast<scalar_t>(out);
        ln[element_offset(log_norm5, n, c, od, oh, ow)] = log_norm;
      }
    }
  });
}

// Each (sample, channel) plane is handled by one thread, its windows in a fixed
// order, so the sums over overlapping windows are deterministic.
template <typename scalar_t>
void backward_kernel(const at::Tensor& grad5, const at::Tensor& input5, const at::Tensor& log_norm5,
                     at::Tensor& grad_input5, const PoolGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* x = input5.const_data_ptr<scalar_t>();
  const scalar_t* gy = grad5.const_data_ptr<scalar_t>();
  const acc_t* ln = log_norm5.const_data_ptr<acc_t>();
  acc_t* dx = grad_input5.mutable_data_ptr<acc_t>();
  const int64_t channels = input5.size(1);
  const int64_t planes = input5.size(0) * channels;
  const int64_t xs[3] = {input5.stride(2), input5.stride(3), input5.stride(4)};
  const int64_t ds[3] = {grad_input5.stride(2), grad_input5.stride(3), grad_input5.stride(4)};
  const int64_t plane_windows = g.output[0] * g.output[1] * g.output[2];

  at::parallel_for(0, planes, grain_for(plane_windows, g.cells), [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t n = plane / channels, c = plane % channels;
      const scalar_t* xp = x + n * input5.stride(0) + c * input5.stride(1);
      acc_t* dxp = dx + n * grad_input5.stride(0) + c * grad_input5.stride(1);
      for (int64_t od = 0; od < g.output[0]; ++od)
        for (int64_t oh = 0; oh < g.output[1]; ++oh)
          for (int64_t ow = 0; ow < g.output[2]; ++ow) {
            const Window w = window_at(g, od, oh, ow);
            const acc_t grad = static_cast<acc_t>(gy[element_offset(grad5, n, c, od, oh, ow)]);
            add_window_gradient<acc_t>(xp, xs, dxp, ds, w, grad,
                                       ln[element_offset(log_norm5, n, c, od, oh, ow)]);
          }
    }
  });
}

// The vectorised kernels of one CPU capability.
struct VectorKernels {
  const char* capability;
#define MMSOFTPOOL_KERNEL_POINTER(capability, name, type) type* name;
  MMSOFTPOOL_FOR_EACH_VECTOR_KERNEL(MMSOFTPOOL_KERNEL_POINTER, DEFAULT)
#undef MMSOFTPOOL_KERNEL_POINTER
};

#define MMSOFTPOOL_KERNEL_ADDRESS(capability, name, type) , &capability::name
#define MMSOFTPOOL_VECTOR_KERNELS(capability)                                            \
  VectorKernels {                                                                        \
    #capability MMSOFTPOOL_FOR_EACH_VECTOR_KERNEL(MMSOFTPOOL_KERNEL_ADDRESS, capability) \
  }

// The build for the capability ATen runs its own kernels with: the best the
// CPU has, or the one ATEN_CPU_CAPABILITY names (read once, at first use).
const VectorKernels& vector_kernels() {
  static const VectorKernels kernels = [] {
#ifdef MMSOFTPOOL_X86_CAPABILITIES
    const std::string capability = at::get_cpu_capability();
    if (capability == "AVX512") return MMSOFTPOOL_VECTOR_KERNELS(AVX512);
    if (capability == "AVX2") return MMSOFTPOOL_VECTOR_KERNELS(AVX2);
#endif
    return MMSOFTPOOL_VECTOR_KERNELS(DEFAULT);
  }();
  return kernels;
}

enum class VectorPath { kRows, kChannels, kNone };

// Which vectorised kernel fits. Output, log_norm and gradient are allocated in
// `format`, so they are contiguous along W (rows) or C (channels) too.
VectorPath vector_path(const at::Tensor& input5, const PoolGeometry& g, at::MemoryFormat format) {
  const auto dtype = input5.scalar_type();
  if ((dtype != at::kFloat && dtype != at::kDouble && dtype != at::kBFloat16 &&
       dtype != at::kHalf) ||
      g.cells > kMaxVectorCells)
    return VectorPath::kNone;
  // A row split by phase holds `stride` entries an output column: with a
  // stride beyond the cell limit it would be far larger than the row.
  if (format == at::MemoryFormat::Contiguous && input5.stride(4) == 1 &&
      g.stride[2] <= kMaxVectorCells)
    return VectorPath::kRows;
  if (format != at::MemoryFormat::Contiguous && input5.stride(1) == 1) return VectorPath::kChannels;
  return VectorPath::kNone;
}

std::tuple<at::Tensor, at::Tensor> soft_pool_forward_cpu(const at::Tensor& input,
                                                         c10::IntArrayRef kernel_size,
                                                         c10::IntArrayRef stride,
                                                         c10::IntArrayRef padding, bool ceil_mode) {
  const PoolGeometry g = make_geometry(input, kernel_size, stride, padding, ceil_mode);
  at::Tensor output, log_norm;
  std::tie(output, log_norm) = empty_forward_outputs(input, g);
  if (output.numel() == 0) return {output, log_norm};
  const auto format = pooling_memory_format(input);
  const at::Tensor input5 = as_5d(input);
  at::Tensor output5 = as_5d(output), log_norm5 = as_5d(log_norm);
  const VectorPath path = vector_path(input5, g, format);
  if (path == VectorPath::kRows) {
    vector_kernels().forward_rows(input5, output5, log_norm5, g);
  } else if (path == VectorPath::kChannels) {
    vector_kernels().forward_channels(input5, output5, log_norm5, g);
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, input.scalar_type(), "soft_pool_forward_cpu",
        [&] { forward_kernel<scalar_t>(input5, output5, log_norm5, g); });
  }
  return {output, log_norm};
}

at::Tensor soft_pool_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                  const at::Tensor& log_norm, c10::IntArrayRef kernel_size,
                                  c10::IntArrayRef stride, c10::IntArrayRef padding,
                                  bool ceil_mode) {
  const PoolGeometry g =
      make_backward_geometry(grad_output, input, log_norm, kernel_size, stride, padding, ceil_mode);
  const auto format = pooling_memory_format(input);
  const at::Tensor input5 = as_5d(input);
  const VectorPath path = vector_path(input5, g, format);
  // Reduced precision is rounded once per cell: the vector kernels sum
  // overlapping windows in float32 themselves (channels_last per item, rows in
  // their slots and a buffer of the rows two chunks share) and write the input
  // gradient in its own type, but for rows overlapping along a chunked D; the
  // generic kernel and those accumulate in a float32 gradient rounded at the end.
  const bool direct =
      path == VectorPath::kChannels || (path == VectorPath::kRows && rows_backward_rounds_once(g));
  const auto grad_dtype = direct ? input.scalar_type() : at::toOpMathType(input.scalar_type());
  at::Tensor grad_input =
      at::empty(input.sizes(), input.options().dtype(grad_dtype).memory_format(format));
  if (input.numel() > 0) {
    // The vector kernels read log_norm in the output's layout: a log_norm
    // passed in another one (or expanded) is made dense in it first.
    const at::Tensor grad5 = as_5d(grad_output), log_norm5 = as_5d(log_norm.contiguous(format));
    at::Tensor grad_input5 = as_5d(grad_input);
    if (path == VectorPath::kRows) {
      vector_kernels().backward_rows(grad5, input5, log_norm5, grad_input5, g);
    } else if (path == VectorPath::kChannels) {
      vector_kernels().backward_channels(grad5, input5, log_norm5, grad_input5, g);
    } else {
      grad_input.zero_();
      AT_DISPATCH_FLOATING_TYPES_AND2(
          at::kHalf, at::kBFloat16, input.scalar_type(), "soft_pool_backward_cpu",
          [&] { backward_kernel<scalar_t>(grad5, input5, log_norm5, grad_input5, g); });
    }
  }
  return grad_input.scalar_type() == input.scalar_type()
             ? grad_input
             : grad_input.to(input.scalar_type(), /*non_blocking=*/false, /*copy=*/false, format);
}

// For tests and the benchmark: the capability whose kernels run, and
// vec_window.h's exponential and logarithm of that build over a float32 tensor.
std::string cpu_capability() { return vector_kernels().capability; }

at::Tensor over_float_tensor(const char* name, void (*f)(const float*, float*, int64_t),
                             const at::Tensor& input) {
  TORCH_CHECK(input.scalar_type() == at::kFloat, name, ": float32 only, got ", input.scalar_type());
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty_like(x);
  f(x.const_data_ptr<float>(), out.mutable_data_ptr<float>(), x.numel());
  return out;
}

at::Tensor exp_nonpositive_cpu(const at::Tensor& input) {
  return over_float_tensor("_exp_nonpositive", vector_kernels().exp_nonpositive, input);
}

at::Tensor log_normaliser_cpu(const at::Tensor& input) {
  return over_float_tensor("_log_normaliser", vector_kernels().log_normaliser, input);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mmsoftpool, m) {
  m.def("_cpu_capability() -> str", &cpu_capability);
  m.def("_exp_nonpositive(Tensor input) -> Tensor");
  m.def("_log_normaliser(Tensor input) -> Tensor");
}

TORCH_LIBRARY_IMPL(mmsoftpool, CPU, m) {
  m.impl("soft_pool_forward", &soft_pool_forward_cpu);
  m.impl("soft_pool_backward", &soft_pool_backward_cpu);
  m.impl("_exp_nonpositive", &exp_nonpositive_cpu);
  m.impl("_log_normaliser", &log_normaliser_cpu);
}

}  // namespace mmsoftpool

// The SoftPool arithmetic of one window, shared by the CPU and CUDA kernels.
//
// Per window R with m = max_R x, in the accumulation type acc_t:
//   forward   y = m + sum_i e_i (x_i - m) / s,   e_i = exp(x_i - m),  s = sum_i e_i
//             log_norm = log(s), saved for the backward
//   backward  w_i = exp(x_i - m - log_norm)
//             dx_i += dy w_i (1 + (x_i - m) - (y - m)),   dy the incoming gradient
// Everything is relative to m, so it neither overflows nor loses precision for
// large |x|. Special windows behave like max_pool: any NaN gives NaN, a +inf
// gives +inf (its gradient shared by the +inf cells), all -inf gives -inf;
// -inf cells take no weight. Padded cells are outside the window.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "soft_pool.h"

namespace mmsoftpool {

// A window clipped to the input: cells [begin, end) along D, H and W.
struct Window {
  int64_t begin[3];
  int64_t end[3];
};

C10_HOST_DEVICE inline Window window_at(const PoolGeometry& g, int64_t od, int64_t oh, int64_t ow) {
  const int64_t index[3] = {od, oh, ow};
  Window w;
  for (int d = 0; d < 3; ++d) {
    const int64_t start = index[d] * g.stride[d] - g.padding[d];
    w.begin[d] = start > 0 ? start : 0;
    const int64_t end = start + g.kernel[d];
    w.end[d] = end < g.input[d] ? end : g.input[d];
  }
  return w;
}

// Calls f(value) for each cell of the window in a plane with the given
// spatial strides.
template <typename acc_t, typename scalar_t, typename F>
C10_HOST_DEVICE inline void for_each_value(const scalar_t* plane, const Window& w,
                                           const int64_t* strides, F&& f) {
  for (int64_t d = w.begin[0]; d < w.end[0]; ++d)
    for (int64_t h = w.begin[1]; h < w.end[1]; ++h)
      for (int64_t x = w.begin[2]; x < w.end[2]; ++x)
        f(static_cast<acc_t>(plane[d * strides[0] + h * strides[1] + x * strides[2]]));
}

// The window maximum; NaN if any cell is NaN.
template <typename acc_t, typename scalar_t>
C10_HOST_DEVICE inline acc_t window_max(const scalar_t* plane, const Window& w,
                                        const int64_t* strides) {
  acc_t m = -std::numeric_limits<acc_t>::infinity();
  bool nan = false;
  for_each_value<acc_t>(plane, w, strides, [&](acc_t v) {
    if (v > m) m = v;
    nan = nan || v != v;
  });
  return nan ? std::numeric_limits<acc_t>::quiet_NaN() : m;
}

// Forward of one window: the output y and log_norm (NaN for a NaN window, 0 for
// windows whose maximum is infinite; the backward does not read it there).
template <typename acc_t, typename scalar_t>
C10_HOST_DEVICE inline void window_forward(const scalar_t* plane, const Window& w,
                                           const int64_t* strides, acc_t& out, acc_t& log_norm) {
  const acc_t m = window_max<acc_t>(plane, w, strides);
  if (m != m || m == std::numeric_limits<acc_t>::infinity() ||
      m == -std::numeric_limits<acc_t>::infinity()) {
    out = m;
    log_norm = m != m ? m : acc_t(0);
    return;
  }
  acc_t sum = 0, weighted = 0;
  for_each_value<acc_t>(plane, w, strides, [&](acc_t v) {
    const acc_t d = v - m;
    const acc_t e = std::exp(d);
    sum += e;
    if (e != 0) weighted += e * d;  // a -inf cell: e = 0, and no NaN from 0 * -inf
  });
  out = m + weighted / sum;
  log_norm = std::log(sum);
}

// Index range [first, last] of the windows along one dimension that cover
// input position i (the backward's gather on CUDA).
C10_HOST_DEVICE inline void covering_windows(int64_t i, int64_t kernel, int64_t stride,
                                             int64_t padding, int64_t num_windows, int64_t& first,
                                             int64_t& last) {
  const int64_t shifted = i + padding;  // position in the padded input
  first = shifted < kernel ? 0 : (shifted - kernel) / stride + 1;
  last = shifted / stride;
  if (last > num_windows - 1) last = num_windows - 1;
}

// What the backward needs of a window; shifted_out = y - m.
template <typename acc_t>
struct WindowGradStats {
  acc_t m;
  acc_t log_norm;
  acc_t shifted_out;
  int64_t inf_count;  // number of +inf cells, for a +inf window
};

template <typename acc_t, typename scalar_t>
C10_HOST_DEVICE inline WindowGradStats<acc_t> window_grad_stats(const scalar_t* plane,
                                                                const Window& w,
                                                                const int64_t* strides,
                                                                acc_t log_norm) {
  constexpr acc_t inf = std::numeric_limits<acc_t>::infinity();
  WindowGradStats<acc_t> s{window_max<acc_t>(plane, w, strides), log_norm, 0, 0};
  if (s.m == inf) {
    for_each_value<acc_t>(plane, w, strides, [&](acc_t v) { s.inf_count += v == inf; });
  } else if (s.m == s.m && s.m != -inf) {
    for_each_value<acc_t>(plane, w, strides, [&](acc_t v) {
      const acc_t d = v - s.m;
      const acc_t weight = std::exp(d - log_norm);
      if (weight != 0) s.shifted_out += weight * d;
    });
  }
  return s;
}

// The gradient a window with incoming gradient dy passes to its cell holding v.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t cell_gradient(acc_t v, acc_t dy, const WindowGradStats<acc_t>& s) {
  constexpr acc_t inf = std::numeric_limits<acc_t>::infinity();
  if (s.m != s.m) return dy * s.m;  // NaN window: NaN gradient
  if (s.m == inf) return v == inf ? dy / static_cast<acc_t>(s.inf_count) : acc_t(0);
  if (s.m == -inf) return 0;  // all -inf: no weight anywhere
  const acc_t d = v - s.m;
  const acc_t weight = std::exp(d - s.log_norm);
  return weight != 0 ? dy * weight * (1 + d - s.shifted_out) : acc_t(0);
}

}  // namespace mmsoftpool

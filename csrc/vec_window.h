// The SIMD form of window.h's arithmetic, for the vectorised CPU kernels
// (csrc/cpu/rows.cpp, csrc/cpu/channels_last.cpp).
//
// Vec::size() windows are computed side by side, one per lane: lane j of
// cells[i] holds cell i of window j. Cells outside the input (padding) are
// -inf. The kernel files are compiled once per CPU capability (setup.py), so
// everything here lives in namespace CPU_CAPABILITY (DEFAULT, AVX2, AVX512),
// as ATen's at::vec does, and the copies do not collide.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "cpu/soft_pool_cpu.h"
#include "window.h"

namespace mmsoftpool {
namespace CPU_CAPABILITY {

using at::vec::Vectorized;

// e^d for d <= 0 or NaN, the only arguments SoftPool takes (x - max in the
// forward, x - max - log_norm in the backward): so no overflow handling, and
// one code path inlined into the window loops instead of a call into Sleef.
// Cody-Waite reduction d = n ln2 + r, |r| <= ln2 / 2, and the degree-7
// polynomial of Sleef's expf_u10 (same coefficients); 2^n is applied as two
// normal factors so subnormal results are rounded once. Below -104 the result
// rounds to 0 (e^-104 is under half the smallest subnormal); -inf gives 0.
// Error against float64, measured over every float in [-104, 0]: see
// docs/benchmarks.md (tests/test_cpu_dispatch.py checks the bound).
C10_ALWAYS_INLINE Vectorized<float> exp_nonpositive(const Vectorized<float>& d) {
  using Vec = Vectorized<float>;
  const Vec x = at::vec::maximum(d, Vec(-104.f));  // NaN-propagating
  Vec n = (x * Vec(1.442695040888963407f)).round();
  n = Vec::blendv(Vec(0.f), n, n == n);  // NaN: any finite n, the polynomial gives NaN
  Vec r = at::vec::fmadd(n, Vec(-0.693145751953125f), x);
  r = at::vec::fmadd(n, Vec(-1.428606765330187045e-06f), r);
  Vec p(0.000198527617612853646278381f);
  p = at::vec::fmadd(p, r, Vec(0.00139304355252534151077271f));
  p = at::vec::fmadd(p, r, Vec(0.00833336077630519866943359f));
  p = at::vec::fmadd(p, r, Vec(0.0416664853692054748535156f));
  p = at::vec::fmadd(p, r, Vec(0.166666671633720397949219f));
  p = at::vec::fmadd(p, r, Vec(0.5f));
  p = at::vec::fmadd(p, r * r, r) + Vec(1.f);
  // 2^k for integral k in [-126, 0], from its exponent bits ((k + 127) << 23,
  // computed exactly in float).
  const auto power_of_two = [](const Vec& k) {
    return at::vec::cast<float>(
        at::vec::convert_to_int_of_same_size((k + Vec(127.f)) * Vec(8388608.f)));
  };
  // n >= -126 in every lane (x >= -87: all SoftPool sees but far tails): 2^n
  // is normal and p * 2^n rounds once. Else n in [-150, 0]: 2^n1 * 2^n2 with
  // n1, n2 in [-75, 0], which rounds once too, so both give the same bits.
  if ((n < Vec(-126.f)).zero_mask() == (1 << Vec::size()) - 1) return p * power_of_two(n);
  const Vec n1 = (n * Vec(0.5f)).trunc(), n2 = n - n1;
  return p * power_of_two(n1) * power_of_two(n2);
}

// double: Sleef's exp (1 ulp); double is not on the fast path.
inline Vectorized<double> exp_nonpositive(const Vectorized<double>& d) { return d.exp(); }

// log(s) for the normaliser s of a window (the sum of its e^(x - max): in
// [1, cells], or NaN), inlined instead of a call into Sleef: s = 2^k m with m
// in [sqrt(1/2), sqrt(2)), f = m - 1, log(m) = 2 atanh(f / (2 + f)) by the
// polynomial and the order of operations of FreeBSD's logf (e_logf.c). Any
// positive normal s is fine; NaN gives NaN. Error against float64, measured
// over every float in [1, 32]: see docs/benchmarks.md (tests/test_cpu_dispatch.py
// checks the bound). The constants and the formula are e_logf.c's, whose notice
// is: "Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
// Developed at SunPro, a Sun Microsystems, Inc. business. Permission to use,
// copy, modify, and distribute this software is freely granted, provided that
// this notice is preserved."
C10_ALWAYS_INLINE Vectorized<float> log_normaliser(const Vectorized<float>& s) {
  using Vec = Vectorized<float>;
  using Int = Vectorized<int32_t>;
  // The exponent and mantissa of s / sqrt(1/2), so that m lands in [sqrt(1/2), sqrt(2)).
  const Int bits = at::vec::cast<int32_t>(s) + Int(0x3f800000 - 0x3f3504f3);
  const Vec k = at::vec::convert_to_fp_of_same_size<float>((bits >> Int(23)) - Int(127));
  const Vec m = at::vec::cast<float>((bits & Int(0x007fffff)) + Int(0x3f3504f3));
  const Vec f = m - Vec(1.f);
  const Vec t = f / (Vec(2.f) + f), z = t * t, w = z * z;
  const Vec r = z * (Vec(0.66666662693f) + w * Vec(0.28498786688f)) +
                w * (Vec(0.40000972152f) + w * Vec(0.24279078841f));
  const Vec half_f2 = Vec(0.5f) * f * f;
  const Vec log =
      t * (half_f2 + r) + k * Vec(9.0580006145e-06f) - half_f2 + f + k * Vec(6.9313812256e-01f);
  return Vec::blendv(log, s, s != s);
}

// double: Sleef's log (1 ulp); double is not on the fast path.
inline Vectorized<double> log_normaliser(const Vectorized<double>& s) { return s.log(); }

// Tensors hold `T` (float, double, BFloat16, Half); the kernels compute in
// compute_t<T> (float for BFloat16 and Half, as at::opmath_type): values are
// widened on load and rounded once, to nearest even, on store.
template <typename T>
using compute_t = at::opmath_type<T>;

template <typename T>
constexpr bool kWidened = !std::is_same_v<T, compute_t<T>>;

// The first Vectorized<compute_t<T>>::size() values at ptr.
template <typename T>
C10_ALWAYS_INLINE Vectorized<compute_t<T>> load_widened(const T* ptr) {
  if constexpr (kWidened<T>) {
    Vectorized<float> v;
    at::vec::load_to_float(ptr, v);
    return v;
  } else {
    return Vectorized<T>::loadu(ptr);
  }
}

// The first `count` values at ptr, 0 in the other lanes.
template <typename T>
C10_ALWAYS_INLINE Vectorized<compute_t<T>> load_widened(const T* ptr, int64_t count) {
  using Vec = Vectorized<compute_t<T>>;
  if constexpr (kWidened<T>) {
    if (count >= Vec::size()) return load_widened(ptr);
    alignas(64) T buffer[Vec::size()] = {};
    std::copy_n(ptr, count, buffer);
    return load_widened<T>(buffer);
  } else {
    return Vec::loadu(ptr, count);
  }
}

// Stores the first `count` lanes of v at ptr, rounded to T.
template <typename T>
C10_ALWAYS_INLINE void store_rounded(const Vectorized<compute_t<T>>& v, T* ptr,
                                     int64_t count = Vectorized<compute_t<T>>::size()) {
  if constexpr (kWidened<T>) {
    at::vec::convert_from_float<T>(v, v).store(ptr, count);
  } else {
    v.store(ptr, count);
  }
}

// Lane j: ptr[j * stride] for j < lanes, else 0 (stride 0: an expanded tensor).
template <typename T>
inline Vectorized<compute_t<T>> load_strided(const T* ptr, int64_t stride, int64_t lanes) {
  if (stride == 1) return load_widened(ptr, lanes);
  alignas(64) T buffer[Vectorized<compute_t<T>>::size()] = {};
  for (int64_t j = 0; j < lanes; ++j) buffer[j] = ptr[j * stride];
  return load_widened<T>(buffer);
}

// The offset of each cell of window (od, oh, ow) for the spatial strides, -1
// for a padding cell, in the kernels' cell order (kd, kh, kw); returns the
// count. With `first`, also whether the
// window is the first (in the kernels' od, oh, ow order) to reach the cell:
// no earlier window covers it along any dimension.
inline int64_t window_cells(const int64_t* strides, const PoolGeometry& g, int64_t od, int64_t oh,
                            int64_t ow, int64_t* offsets, bool* first = nullptr) {
  const int64_t index[3] = {od, oh, ow};
  int64_t start[3];
  for (int d = 0; d < 3; ++d) start[d] = index[d] * g.stride[d] - g.padding[d];
  int64_t i = 0;
  for (int64_t kd = 0; kd < g.kernel[0]; ++kd)
    for (int64_t kh = 0; kh < g.kernel[1]; ++kh)
      for (int64_t kw = 0; kw < g.kernel[2]; ++kw, ++i) {
        const int64_t d = start[0] + kd, h = start[1] + kh, w = start[2] + kw;
        const bool inside =
            d >= 0 && d < g.input[0] && h >= 0 && h < g.input[1] && w >= 0 && w < g.input[2];
        offsets[i] = inside ? d * strides[0] + h * strides[1] + w * strides[2] : -1;
        if (first) {
          const int64_t k[3] = {kd, kh, kw};
          bool earliest = true;
          for (int a = 0; a < 3; ++a)
            earliest = earliest && (index[a] == 0 || k[a] >= g.kernel[a] - g.stride[a]);
          first[i] = earliest;
        }
      }
  return i;
}

// kCells > 0: windows of exactly kCells cells, known at compile time so that
// the loops unroll and the cells stay in registers; 0: any count up to
// kMaxVectorCells.
template <typename scalar_t, int kCells>
struct VecWindow {
  using Vec = Vectorized<scalar_t>;
  static constexpr int64_t kLanes = Vec::size();
  static constexpr scalar_t kInf = std::numeric_limits<scalar_t>::infinity();
  static constexpr int64_t kMax = kCells > 0 ? kCells : kMaxVectorCells;

  static int64_t cell_count(const PoolGeometry& g) { return kCells > 0 ? kCells : g.cells; }

  // d = x - m with -inf cells moved to the lowest finite value, so that exp(d)
  // is 0 and e * d is 0 rather than 0 * inf = NaN.
  static Vec shifted(const Vec& cell, const Vec& m) {
    return at::vec::maximum(cell - m, Vec(std::numeric_limits<scalar_t>::lowest()));
  }

  static Vec window_max(const Vec* cells, int64_t count) {
    Vec m = cells[0];
    for (int64_t i = 1; i < count; ++i) m = at::vec::maximum(m, cells[i]);  // NaN-propagating
    return m;
  }

  C10_ALWAYS_INLINE static void forward(const Vec* cells, int64_t count, Vec& out, Vec& log_norm) {
    const Vec m = window_max(cells, count);
    Vec sum(0), weighted(0);
    for (int64_t i = 0; i < count; ++i) {
      const Vec d = shifted(cells[i], m);
      const Vec e = exp_nonpositive(d);
      sum = sum + e;
      weighted = at::vec::fmadd(e, d, weighted);
    }
    // A window of NaN gives NaN through the arithmetic; +inf and all -inf
    // windows give their maximum.
    const Vec infinite = m.abs() == Vec(kInf);
    out = Vec::blendv(m + weighted / sum, m, infinite);
    log_norm = Vec::blendv(log_normaliser(sum), Vec(0), infinite);
  }

  // Gradients of the cells of the lanes' windows; false (nothing written) if a
  // window's maximum is not finite.
  C10_ALWAYS_INLINE static bool backward(const Vec* cells, int64_t count, const Vec& grad,
                                         const Vec& log_norm, Vec* cell_grads) {
    const Vec m = window_max(cells, count);
    if ((m.abs() < Vec(kInf)).zero_mask() != 0) return false;
    Vec d[kMax], weight[kMax];
    Vec shifted_out(0);  // y - m
    for (int64_t i = 0; i < count; ++i) {
      d[i] = shifted(cells[i], m);
      weight[i] = exp_nonpositive(d[i] - log_norm);
      shifted_out = at::vec::fmadd(weight[i], d[i], shifted_out);
    }
    const Vec one_minus = Vec(1) - shifted_out;
    for (int64_t i = 0; i < count; ++i) cell_grads[i] = grad * weight[i] * (one_minus + d[i]);
    return true;
  }

  // The backward of lanes [0, lanes) by window.h's scalar arithmetic (for
  // vectors holding a window with a non-finite maximum), cells in the same
  // order as the vector path, 0 for padding cells and lanes past `lanes`.
  // Lane j is the window at `index` + j * lane_step in the plane at
  // plane + j * plane_step, with incoming gradient grads[j * grad_step] (of
  // the tensors' type T) and log_norms[j].
  template <typename T>
  static void backward_by_lane(const T* plane, int64_t plane_step, const int64_t* xs,
                               const PoolGeometry& g, const int64_t* index,
                               const int64_t* lane_step, int64_t lanes, const T* grads,
                               int64_t grad_step, const scalar_t* log_norms, Vec* cell_grads) {
    alignas(64) scalar_t buffer[kMax][kLanes] = {};
    int64_t offsets[kMax];
    for (int64_t j = 0; j < lanes; ++j) {
      const int64_t od = index[0] + j * lane_step[0], oh = index[1] + j * lane_step[1],
                    ow = index[2] + j * lane_step[2];
      const T* lane_plane = plane + j * plane_step;
      const auto stats =
          window_grad_stats<scalar_t>(lane_plane, window_at(g, od, oh, ow), xs, log_norms[j]);
      const scalar_t grad = static_cast<scalar_t>(grads[j * grad_step]);
      const int64_t count = window_cells(xs, g, od, oh, ow, offsets);
      for (int64_t i = 0; i < count; ++i)
        if (offsets[i] >= 0)
          buffer[i][j] = cell_gradient(static_cast<scalar_t>(lane_plane[offsets[i]]), grad, stats);
    }
    for (int64_t i = 0; i < cell_count(g); ++i) cell_grads[i] = Vec::loadu(buffer[i]);
  }
};

// Calls f(VecWindow<scalar_t, K>{}) with K the window size for the common
// 2x2 and 3x3 windows (compile-time loops), else K = 0.
template <typename scalar_t, typename F>
void with_cell_count(const PoolGeometry& g, F&& f) {
  switch (g.cells) {
    case 4:
      return f(VecWindow<scalar_t, 4>{});
    case 9:
      return f(VecWindow<scalar_t, 9>{});
    default:
      return f(VecWindow<scalar_t, 0>{});
  }
}

// Calls f(G{}) with G the element type of the input gradient the backward
// writes: T, or compute_t<T> for a BFloat16 or Half input whose gradient
// soft_pool_cpu.cpp accumulates in float and rounds once afterwards (the rows
// kernel where windows overlap along a chunked D: rows_backward_rounds_once).
template <typename T, typename F>
void with_gradient_type(const at::Tensor& grad_input, F&& f) {
  if constexpr (kWidened<T>) {
    if (grad_input.scalar_type() != c10::CppTypeToScalarType<T>::value) {
      TORCH_INTERNAL_ASSERT(grad_input.scalar_type() ==
                            c10::CppTypeToScalarType<compute_t<T>>::value);
      return f(compute_t<T>{});
    }
  }
  return f(T{});
}

}  // namespace CPU_CAPABILITY
}  // namespace mmsoftpool

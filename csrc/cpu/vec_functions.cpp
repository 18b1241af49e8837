// vec_window.h's exponential and logarithm over a buffer, for the accuracy
// tests of each CPU capability's build (tests/test_cpu_dispatch.py, through
// mmsoftpool::_exp_nonpositive and mmsoftpool::_log_normaliser).
#include <algorithm>

#include "../vec_window.h"

namespace mmsoftpool {
namespace CPU_CAPABILITY {

namespace {

template <typename F>
void over_buffer(const float* in, float* out, int64_t size, F&& f) {
  using Vec = Vectorized<float>;
  for (int64_t i = 0; i < size; i += Vec::size()) {
    const int64_t lanes = std::min<int64_t>(Vec::size(), size - i);
    f(Vec::loadu(in + i, lanes)).store(out + i, lanes);
  }
}

}  // namespace

void exp_nonpositive(const float* in, float* out, int64_t size) {
  over_buffer(in, out, size, [](const Vectorized<float>& x) { return exp_nonpositive(x); });
}

void log_normaliser(const float* in, float* out, int64_t size) {
  over_buffer(in, out, size, [](const Vectorized<float>& x) { return log_normaliser(x); });
}

}  // namespace CPU_CAPABILITY
}  // namespace mmsoftpool

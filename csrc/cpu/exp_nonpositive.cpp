// vec_window.h's exponential over a buffer, for the accuracy test of each CPU
// capability's build (tests/test_cpu_dispatch.py, through mmsoftpool::_exp_nonpositive).
#include <algorithm>

#include "../vec_window.h"

namespace mmsoftpool {
namespace CPU_CAPABILITY {

void exp_nonpositive(const float* in, float* out, int64_t size) {
  using Vec = Vectorized<float>;
  for (int64_t i = 0; i < size; i += Vec::size()) {
    const int64_t lanes = std::min<int64_t>(Vec::size(), size - i);
    exp_nonpositive(Vec::loadu(in + i, lanes)).store(out + i, lanes);
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace mmsoftpool

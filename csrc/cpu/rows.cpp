// Vectorised SoftPool kernels for inputs contiguous along W (N, C, [D, [H,]] W
// contiguous): the lanes are neighbouring output columns of one output row.
// Compiled once per CPU capability (setup.py); the window maths is
// vec_window.h's.
//
// Input rows are split by column phase (RowPhases), so that cell kw of kLanes
// neighbouring windows is one contiguous load whatever the stride and padding.
// Split rows live in a few-row cache per thread (RowSlots), never a copy of
// the plane: a row read by consecutive output rows is split once.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../vec_window.h"

namespace mmsoftpool {
namespace CPU_CAPABILITY {

namespace {

// The lanes' windows are neighbouring output columns of one plane.
constexpr int64_t kNextColumn[3] = {0, 0, 1};

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((b - 1 - a) / b); }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// An input row split by column phase: with stride s, input column
// s * (q - shift) + r is entry q of phase r, and cell kw of the window at
// output column ow is entry ow + (kw - padding) / s + shift (rounded down) of
// phase (kw - padding) mod s. The backward accumulates into a split gradient
// row with plain vector adds and unsplits it into the input gradient in one
// pass.
template <typename scalar_t>
struct RowPhases {
  using Vec = Vectorized<scalar_t>;
  static constexpr int64_t kLanes = Vec::size();
  static constexpr scalar_t kInf = std::numeric_limits<scalar_t>::infinity();

  int64_t stride, width;
  int64_t shift;   // entries before column 0: the left padding
  int64_t used;    // entries that windows read; columns outside the input are -inf
  int64_t length;  // entries of one phase, whole vectors; 0 past `used`
  int64_t cell_entry[kMaxVectorCells];  // kw -> phase * length + entry of ow = 0

  explicit RowPhases(const PoolGeometry& g) : stride(g.stride[2]), width(g.input[2]) {
    const int64_t first = floor_div(-g.padding[2], stride);
    const int64_t last = floor_div(g.kernel[2] - 1 - g.padding[2], stride);
    shift = -first;
    used = g.output[2] + last - first;
    // Whole vectors, and room for the loads of the last (partial) vector of windows.
    length = ceil_div(ceil_div(g.output[2], kLanes) * kLanes + last - first, kLanes) * kLanes;
    for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
      const int64_t a = floor_div(kw - g.padding[2], stride);
      cell_entry[kw] = (kw - g.padding[2] - a * stride) * length + a + shift;
    }
  }

  int64_t size() const { return stride * length; }
  int64_t column(int64_t phase, int64_t q) const { return stride * (q - shift) + phase; }

  // Stride 1 or 2: entries q0 .. q0 + kLanes - 1 of every phase are one
  // block of stride * kLanes input columns from column(0, q0), split (and
  // unsplit) by vector loads and a deinterleave (interleave).
  bool splits_by_deinterleave() const { return stride <= 2; }

  // Lanes j < n of `head`, the others of `tail` (n may be <= 0 or >= kLanes):
  // a compare and a blend, where Vec::set is a call over a switch.
  static Vec head_lanes(const Vec& head, const Vec& tail, int64_t n) {
    return Vec::blendv(tail, head, Vec::arange(scalar_t(0), 1) < Vec(static_cast<scalar_t>(n)));
  }

  // Columns c0 .. c0 + lanes - 1 of a row, columns past its end as -inf.
  template <typename T>
  Vec load_columns(const T* row, int64_t c0) const {
    const int64_t n = std::min(kLanes, width - c0);
    if (n == kLanes) return load_widened(row + c0);
    return n > 0 ? head_lanes(load_widened(row + c0, n), Vec(-kInf), n) : Vec(-kInf);
  }

  // A row of the input (of type T, widened to scalar_t) split by phase.
  template <typename T>
  void split(const T* row, scalar_t* out) const {
    for (int64_t q0 = 0; q0 < length; q0 += kLanes) {
      if (splits_by_deinterleave()) {
        const int64_t c0 = column(0, q0);
        Vec even, odd(0);
        if (c0 >= 0) {
          even = load_columns(row, c0);
          if (stride == 2)
            std::tie(even, odd) = at::vec::deinterleave2(even, load_columns(row, c0 + kLanes));
        } else {  // over the left padding: columns before the row are -inf
          alignas(64) scalar_t edge[2 * kLanes];
          for (int64_t t = 0; t < stride * kLanes; ++t)
            edge[t] = c0 + t >= 0 && c0 + t < width ? static_cast<scalar_t>(row[c0 + t]) : -kInf;
          even = Vec::loadu(edge);
          if (stride == 2)
            std::tie(even, odd) = at::vec::deinterleave2(even, Vec::loadu(edge + kLanes));
        }
        const int64_t read = used - q0;  // entries no window reads: 0, finite for lanes past a row
        if (read < kLanes) {
          even = head_lanes(even, Vec(0), read);
          odd = head_lanes(odd, Vec(0), read);
        }
        even.store(out + q0);
        if (stride == 2) odd.store(out + length + q0);
      } else {
        for (int64_t r = 0; r < stride; ++r)
          for (int64_t q = q0; q < std::min(q0 + kLanes, length); ++q) {
            const int64_t c = column(r, q);
            out[r * length + q] = q >= used             ? scalar_t(0)
                                  : c >= 0 && c < width ? static_cast<scalar_t>(row[c])
                                                        : -kInf;
          }
      }
    }
  }

  // row[c0 ..] = v (or += v), for the columns inside the row, rounded to G.
  template <typename G>
  void store_columns(Vec v, G* row, int64_t c0, bool accumulate) const {
    const int64_t n = std::min(kLanes, width - c0);
    if (n <= 0) return;
    if (accumulate) v = v + load_widened(row + c0, n);
    store_rounded(v, row + c0, n);
  }

  // row[c] = the entry of column c (0 where no window reaches), or row[c] +=
  // it with `accumulate` (then columns no window reaches are left alone).
  // Entries no window reads hold 0 (their lanes carry no gradient). The row
  // holds G: scalar_t, or the tensors' type where each row is written back
  // once.
  template <typename G>
  void unsplit(const scalar_t* split, G* row, bool accumulate) const {
    for (int64_t q0 = 0; q0 < length; q0 += kLanes) {
      if (splits_by_deinterleave()) {
        const int64_t c0 = column(0, q0);
        Vec low = Vec::loadu(split + q0), high;
        if (stride == 2)
          std::tie(low, high) = at::vec::interleave2(low, Vec::loadu(split + length + q0));
        if (c0 >= 0) {  // columns past the row's end are left out
          store_columns(low, row, c0, accumulate);
          if (stride == 2) store_columns(high, row, c0 + kLanes, accumulate);
        } else {  // over the left padding: only the columns inside the row
          alignas(64) scalar_t edge[2 * kLanes];
          low.store(edge);
          if (stride == 2) high.store(edge + kLanes);
          for (int64_t t = -c0; t < std::min(stride * kLanes, width - c0); ++t)
            row[c0 + t] =
                static_cast<G>(accumulate ? static_cast<scalar_t>(row[c0 + t]) + edge[t] : edge[t]);
        }
      } else {
        for (int64_t r = 0; r < stride; ++r)
          for (int64_t q = q0; q < std::min(q0 + kLanes, length); ++q) {
            const int64_t c = column(r, q);
            if (c < 0 || c >= width) continue;
            const scalar_t v = q < used ? split[r * length + q] : scalar_t(0);
            row[c] = static_cast<G>(accumulate ? static_cast<scalar_t>(row[c]) + v : v);
          }
      }
    }
    const int64_t past = std::max<int64_t>(0, column(0, length));  // columns past every entry
    if (!accumulate && past < width) std::fill(row + past, row + width, G(0));
  }
};

// The split input rows a thread is working on: slot (d mod kernel_d, h mod
// kernel_h) holds input row (d, h), so the rows of one output row never share
// a slot and a row read by consecutive output rows stays. Rows are tagged
// with (plane, d, h). With gradients, each slot also accumulates the gradient
// of its row until the row leaves the slot.
template <typename scalar_t>
class RowSlots {
 public:
  RowSlots(const RowPhases<scalar_t>& phases, const PoolGeometry& g, bool with_grad)
      : phases_(phases),
        g_(g),
        slots_(g.kernel[0] * g.kernel[1]),
        split_(new scalar_t[slots_ * phases.size()]),
        grad_(with_grad ? new scalar_t[slots_ * phases.size()] : nullptr),
        tags_(slots_, -1) {}

  // Points rows[kd * kernel_h + kh] at window row (kd, kh) of output row (od,
  // oh) of `plane` (x_plane, spatial strides xs), nullptr for padding rows,
  // splitting the rows not held yet; write_back(tag, grad) is called first
  // for a row that leaves its slot.
  template <typename T, typename WriteBack>
  void window_rows(int64_t plane, const T* x_plane, const int64_t* xs, int64_t od, int64_t oh,
                   scalar_t** rows, scalar_t** grads, WriteBack&& write_back) {
    for (int64_t kd = 0; kd < g_.kernel[0]; ++kd) {
      const int64_t d = od * g_.stride[0] - g_.padding[0] + kd;
      for (int64_t kh = 0; kh < g_.kernel[1]; ++kh) {
        const int64_t h = oh * g_.stride[1] - g_.padding[1] + kh;
        const int64_t r = kd * g_.kernel[1] + kh;
        if (d < 0 || d >= g_.input[0] || h < 0 || h >= g_.input[1]) {
          rows[r] = nullptr;
          if (grads) grads[r] = nullptr;
          continue;
        }
        const int64_t slot = (d % g_.kernel[0]) * g_.kernel[1] + h % g_.kernel[1];
        const int64_t tag = (plane * g_.input[0] + d) * g_.input[1] + h;
        scalar_t* split = split_.get() + slot * phases_.size();
        scalar_t* grad = grad_ ? grad_.get() + slot * phases_.size() : nullptr;
        if (tags_[slot] != tag) {
          if (grad && tags_[slot] >= 0) write_back(tags_[slot], grad);
          phases_.split(x_plane + d * xs[0] + h * xs[1], split);
          if (grad) std::fill(grad, grad + phases_.size(), scalar_t(0));
          tags_[slot] = tag;
        }
        rows[r] = split;
        if (grads) grads[r] = grad;
      }
    }
  }

  // write_back(tag, grad) for every row held; the slots are empty afterwards.
  template <typename WriteBack>
  void write_back_all(WriteBack&& write_back) {
    for (int64_t slot = 0; slot < slots_; ++slot)
      if (tags_[slot] >= 0) {
        write_back(tags_[slot], grad_.get() + slot * phases_.size());
        tags_[slot] = -1;
      }
  }

 private:
  const RowPhases<scalar_t>& phases_;
  const PoolGeometry& g_;
  int64_t slots_;
  std::unique_ptr<scalar_t[]> split_, grad_;
  std::vector<int64_t> tags_;
};

// Where cell i (window.h's order) of the window at output column 0 is read
// from (or, for the gradient, added to) in the split rows of one output row:
// padding rows point at `padding`, a row of -inf (or a row that is never read).
template <typename scalar_t>
void cells_in_split_rows(const RowPhases<scalar_t>& phases, const PoolGeometry& g,
                         scalar_t* const* rows, scalar_t* padding, scalar_t** cells) {
  for (int64_t r = 0, i = 0; r < g.kernel[0] * g.kernel[1]; ++r)
    for (int64_t kw = 0; kw < g.kernel[2]; ++kw, ++i)
      cells[i] = (rows[r] ? rows[r] : padding) + phases.cell_entry[kw];
}

// Row ends that fill at most half a vector (56 = 3 x 16 + 8 columns at
// AVX-512, the ResNet stem) are computed two rows to a vector: the pending
// row's end in lanes [0, t), the next row's in [t, 2t). Lanes are independent
// windows, so the results are the same bits as one row end to a vector.
template <typename K, typename T>
class PairedRowEnds {
 public:
  using Vec = typename K::Vec;
  using scalar_t = typename Vec::value_type;

  explicit PairedRowEnds(const PoolGeometry& g)
      : tail_(g.output[2] % K::kLanes), start_(g.output[2] - tail_), count_(K::cell_count(g)) {}

  // Whether the rows' last windows go through add(); else the rows' vectors
  // run to the end of the row.
  bool used() const { return tail_ > 0 && 2 * tail_ <= K::kLanes; }
  int64_t start() const { return start_; }  // the first column of a row end

  // The row end whose cells start at cell_at[i] + start() and whose outputs
  // go to y_row, ln_row (+ start()): held until the next one, then both run.
  void add(scalar_t* const* cell_at, T* y_row, scalar_t* ln_row) {
    const int64_t lane = pending_y_ ? tail_ : 0;
    for (int64_t i = 0; i < count_; ++i) Vec::loadu(cell_at[i] + start_).store(cells_[i] + lane);
    if (!pending_y_) {
      pending_y_ = y_row + start_;
      pending_ln_ = ln_row + start_;
      return;
    }
    run_pending();
    std::copy_n(out_lanes_ + tail_, tail_, y_row + start_);
    std::copy_n(ln_lanes_ + tail_, tail_, ln_row + start_);
  }

  // Runs the pending row end (lanes [0, t)), and keeps every lane's results
  // in out_lanes_, ln_lanes_ for add(); called at the end of a thread's rows.
  void run_pending() {
    if (!pending_y_) return;
    Vec cells[K::kMax];
    for (int64_t i = 0; i < count_; ++i) cells[i] = Vec::loadu(cells_[i]);
    Vec out, log_norm;
    K::forward(cells, count_, out, log_norm);
    store_rounded(out, out_lanes_);
    log_norm.store(ln_lanes_);
    std::copy_n(out_lanes_, tail_, pending_y_);
    std::copy_n(ln_lanes_, tail_, pending_ln_);
    pending_y_ = nullptr;
    pending_ln_ = nullptr;
  }

 private:
  int64_t tail_, start_, count_;
  // Room for two row ends; lanes past them hold cells read past the row ends
  // (split entries or padding), whose results are dropped.
  alignas(64) scalar_t cells_[K::kMax][2 * K::kLanes];
  alignas(64) T out_lanes_[K::kLanes];
  alignas(64) scalar_t ln_lanes_[K::kLanes];
  T* pending_y_ = nullptr;
  scalar_t* pending_ln_ = nullptr;
};

// Parallel over output rows (sample, channel, od, oh): all threads busy
// whatever the batch. Input and output hold T, log_norm scalar_t.
template <typename T, typename K>
void forward(const K&, const at::Tensor& input5, at::Tensor& output5, at::Tensor& log_norm5,
             const PoolGeometry& g) {
  using Vec = typename K::Vec;
  using scalar_t = typename Vec::value_type;
  const T* x = input5.const_data_ptr<T>();
  T* y = output5.mutable_data_ptr<T>();
  scalar_t* ln = log_norm5.mutable_data_ptr<scalar_t>();
  const int64_t channels = input5.size(1), count = K::cell_count(g);
  const int64_t xs[2] = {input5.stride(2), input5.stride(3)};
  const RowPhases<scalar_t> phases(g);
  const int64_t plane_rows = g.output[0] * g.output[1];
  const int64_t rows = input5.size(0) * channels * plane_rows;
  at::parallel_for(0, rows, grain_for(g.output[2], count), [&](int64_t begin, int64_t end) {
    RowSlots<scalar_t> slots(phases, g, /*with_grad=*/false);
    const std::unique_ptr<scalar_t[]> padding(new scalar_t[phases.size()]);
    std::fill(padding.get(), padding.get() + phases.size(), -K::kInf);
    PairedRowEnds<K, T> row_ends(g);
    const int64_t vector_end = row_ends.used() ? row_ends.start() : g.output[2];
    scalar_t* window_rows[kMaxVectorCells];
    scalar_t* cell_at[kMaxVectorCells];
    Vec cells[K::kMax];
    for (int64_t row = begin; row < end; ++row) {
      const int64_t oh = row % g.output[1], od = (row / g.output[1]) % g.output[0];
      const int64_t plane = row / plane_rows, n = plane / channels, c = plane % channels;
      slots.window_rows(plane, x + n * input5.stride(0) + c * input5.stride(1), xs, od, oh,
                        window_rows, nullptr, [](int64_t, scalar_t*) {});
      cells_in_split_rows(phases, g, window_rows, padding.get(), cell_at);
      T* y_row = y + element_offset(output5, n, c, od, oh, 0);
      scalar_t* ln_row = ln + element_offset(log_norm5, n, c, od, oh, 0);
      for (int64_t ow0 = 0; ow0 < vector_end; ow0 += K::kLanes) {
        const int64_t lanes = std::min(K::kLanes, g.output[2] - ow0);
        for (int64_t i = 0; i < count; ++i) cells[i] = Vec::loadu(cell_at[i] + ow0);
        Vec out, log_norm;
        K::forward(cells, count, out, log_norm);
        store_rounded(out, y_row + ow0, lanes);
        log_norm.store(ln_row + ow0, lanes);
      }
      if (row_ends.used()) row_ends.add(cell_at, y_row, ln_row);
    }
    row_ends.run_pending();
  });
}

// The backward in chunks of output rows along D (3-D) or H: chunks that share
// no input row run in parallel, the two phases (even, odd chunks) one after the
// other, so windows overlapping a chunk boundary add to the row in a fixed
// order. Chunks are a fixed number of rows, so the sums do not depend on the
// thread count. A slot's gradient row goes to the input gradient when it leaves
// the slot: stored the first time, added afterwards; rows no window reaches are
// zeroed at the end. Input and output gradient hold T, log_norm scalar_t, the
// input gradient G: T, or scalar_t where a row may be written back more than
// once (rows_backward_rounds_once). With a reduced G the rows two chunks share
// are written back into a float32 side buffer instead, and rounded once at the
// end.
constexpr int64_t kChunkRows = 16;

template <typename T, typename G, typename K>
void backward(const K&, const at::Tensor& grad5, const at::Tensor& input5,
              const at::Tensor& log_norm5, at::Tensor& grad_input5, const PoolGeometry& g) {
  using Vec = typename K::Vec;
  using scalar_t = typename Vec::value_type;
  const T* x = input5.const_data_ptr<T>();
  const T* gy = grad5.const_data_ptr<T>();
  const scalar_t* ln = log_norm5.const_data_ptr<scalar_t>();
  G* dx = grad_input5.mutable_data_ptr<G>();
  const int64_t channels = input5.size(1), planes = input5.size(0) * channels;
  const int64_t count = K::cell_count(g);
  const int64_t xs[3] = {input5.stride(2), input5.stride(3), 1};
  const int64_t grad_column_stride = grad5.stride(4);  // 0 for an expanded gradient
  const RowPhases<scalar_t> phases(g);
  const int64_t plane_rows = g.input[0] * g.input[1];

  const int along = g.output[0] > 1 ? 0 : 1;  // the dimension chunked
  const int64_t chunk = std::max(kChunkRows, ceil_div(g.kernel[along], g.stride[along]));
  const int64_t chunks = ceil_div(g.output[along], chunk);
  const bool overlap = g.kernel[along] > g.stride[along] && chunks > 1;
  std::vector<uint8_t> written(planes * plane_rows, 0);  // per input row: holds a value

  // The side buffer: per (plane, depth) and chunk boundary, the kernel -
  // stride rows of H both chunks' windows reach (along is H here:
  // rows_backward_rounds_once rules out an overlap along a chunked D).
  constexpr bool kReduced = !std::is_same_v<G, scalar_t>;
  const bool sided = kReduced && overlap;
  TORCH_INTERNAL_ASSERT(!sided || along == 1);
  const int64_t shared_rows = sided ? g.kernel[1] - g.stride[1] : 0;
  const int64_t chunk_span = chunk * g.stride[1];
  std::vector<scalar_t> side(planes * g.input[0] * (chunks - 1) * shared_rows * g.input[2]);
  std::vector<uint8_t> side_written(side.size() / std::max<int64_t>(1, g.input[2]), 0);
  const auto side_row = [&](int64_t tag) -> int64_t {  // -1: not a shared row
    if (!sided) return -1;
    const int64_t h = tag % g.input[1], from = h + g.padding[1];
    const int64_t boundary = from / chunk_span, r = from - boundary * chunk_span;
    if (boundary < 1 || boundary >= chunks || r >= shared_rows) return -1;
    return ((tag / g.input[1]) * (chunks - 1) + boundary - 1) * shared_rows + r;
  };

  const auto dx_row = [&](int64_t tag) {
    const int64_t plane = tag / plane_rows, n = plane / channels, c = plane % channels;
    const int64_t d = (tag % plane_rows) / g.input[1], h = tag % g.input[1];
    return dx + element_offset(grad_input5, n, c, d, h, 0);
  };
  // A slot's gradient row into the input gradient (or the side buffer).
  const auto write_back = [&](int64_t tag, scalar_t* grad) {
    const int64_t shared = side_row(tag);
    if (shared >= 0) {
      phases.unsplit(grad, side.data() + shared * g.input[2], side_written[shared] != 0);
      side_written[shared] = 1;
      return;
    }
    phases.unsplit(grad, dx_row(tag), written[tag] != 0);
    written[tag] = 1;
  };

  for (int64_t phase = 0; phase < (overlap ? 2 : 1); ++phase) {
    const int64_t phase_chunks = overlap ? (chunks - phase + 1) / 2 : chunks;
    const int64_t chunk_windows = chunk * (along == 0 ? g.output[1] : 1) * g.output[2];
    at::parallel_for(
        0, planes * phase_chunks, grain_for(chunk_windows, count), [&](int64_t begin, int64_t end) {
          RowSlots<scalar_t> slots(phases, g, /*with_grad=*/true);
          const std::unique_ptr<scalar_t[]> padding(new scalar_t[2 * phases.size()]);
          scalar_t* padding_grad = padding.get() + phases.size();  // added to, never read
          std::fill(padding.get(), padding_grad, -K::kInf);
          scalar_t* window_rows[kMaxVectorCells];
          scalar_t* grad_rows[kMaxVectorCells];
          scalar_t* cell_at[kMaxVectorCells];
          scalar_t* grad_at[kMaxVectorCells];
          Vec cells[K::kMax], cell_grads[K::kMax];
          for (int64_t item = begin; item < end; ++item) {
            const int64_t plane = item / phase_chunks, n = plane / channels, c = plane % channels;
            const int64_t j = overlap ? 2 * (item % phase_chunks) + phase : item % phase_chunks;
            const int64_t first = j * chunk, last = std::min(g.output[along], first + chunk);
            const T* xp = x + n * input5.stride(0) + c * input5.stride(1);
            const int64_t od_end = along == 0 ? last : g.output[0];
            for (int64_t od = along == 0 ? first : 0; od < od_end; ++od) {
              const int64_t oh_end = along == 1 ? last : g.output[1];
              for (int64_t oh = along == 1 ? first : 0; oh < oh_end; ++oh) {
                slots.window_rows(plane, xp, xs, od, oh, window_rows, grad_rows, write_back);
                cells_in_split_rows(phases, g, window_rows, padding.get(), cell_at);
                cells_in_split_rows(phases, g, grad_rows, padding_grad, grad_at);
                const T* dy_row = gy + element_offset(grad5, n, c, od, oh, 0);
                const scalar_t* ln_row = ln + element_offset(log_norm5, n, c, od, oh, 0);
                for (int64_t ow0 = 0; ow0 < g.output[2]; ow0 += K::kLanes) {
                  // Lanes past the row get gradient 0 and finite cells, so add 0.
                  const int64_t lanes = std::min(K::kLanes, g.output[2] - ow0);
                  for (int64_t i = 0; i < count; ++i) cells[i] = Vec::loadu(cell_at[i] + ow0);
                  const T* dy_at = dy_row + ow0 * grad_column_stride;
                  const Vec grad = load_strided(dy_at, grad_column_stride, lanes);
                  if (!K::backward(cells, count, grad, Vec::loadu(ln_row + ow0, lanes),
                                   cell_grads)) {
                    const int64_t index[3] = {od, oh, ow0};
                    K::backward_by_lane(xp, 0, xs, g, index, kNextColumn, lanes, dy_at,
                                        grad_column_stride, ln_row + ow0, cell_grads);
                  }
                  for (int64_t i = 0; i < count; ++i)
                    (Vec::loadu(grad_at[i] + ow0) + cell_grads[i]).store(grad_at[i] + ow0);
                }
              }
            }
            slots.write_back_all(write_back);
          }
        });
  }
  at::parallel_for(0, planes, grain_for(plane_rows), [&](int64_t begin, int64_t end) {
    for (int64_t tag = begin * plane_rows; tag < end * plane_rows; ++tag) {
      const int64_t shared = side_row(tag);
      G* row = dx_row(tag);
      if (shared >= 0 && side_written[shared]) {  // rounded once
        const scalar_t* sum = side.data() + shared * g.input[2];
        for (int64_t w = 0; w < g.input[2]; ++w) row[w] = static_cast<G>(sum[w]);
      } else if (!written[tag]) {
        std::fill(row, row + g.input[2], G(0));
      }
    }
  });
}

// Windows of two columns at stride 2 inside the input (no padding, no window
// past the end from ceil_mode), no two sharing a cell: each input cell has at
// most one window, so the backward stores its gradient once, straight from
// the input (a load and a deinterleave for each window row, as the split
// would), with no split rows, row cache or chunks.
bool direct_backward(const PoolGeometry& g) {
  for (int d = 0; d < 3; ++d)
    if (g.padding[d] != 0 || (g.output[d] - 1) * g.stride[d] + g.kernel[d] > g.input[d])
      return false;
  return windows_disjoint(g) && g.kernel[2] == 2 && g.stride[2] == 2;
}

// The direct backward, parallel over output rows as the forward is. The cells'
// gradients are the same bits as backward()'s, which adds each to a zeroed
// slot (0 + -0 is +0, hence the + 0 below). Input rows and columns that no
// window reaches are zeroed.
template <typename T, typename K>
void backward_direct(const K&, const at::Tensor& grad5, const at::Tensor& input5,
                     const at::Tensor& log_norm5, at::Tensor& grad_input5, const PoolGeometry& g) {
  using Vec = typename K::Vec;
  using scalar_t = typename Vec::value_type;
  constexpr int64_t kLanes = K::kLanes;
  const T* x = input5.const_data_ptr<T>();
  const T* gy = grad5.const_data_ptr<T>();
  const scalar_t* ln = log_norm5.const_data_ptr<scalar_t>();
  T* dx = grad_input5.mutable_data_ptr<T>();
  const int64_t channels = input5.size(1), count = K::cell_count(g);
  const int64_t window_rows = g.kernel[0] * g.kernel[1];
  const int64_t xs[3] = {input5.stride(2), input5.stride(3), 1};
  const int64_t grad_column_stride = grad5.stride(4);  // 0 for an expanded gradient
  const int64_t plane_rows = g.output[0] * g.output[1];
  const int64_t reached = 2 * g.output[2];  // the columns windows reach
  at::parallel_for(
      0, input5.size(0) * channels * plane_rows, grain_for(g.output[2], count),
      [&](int64_t begin, int64_t end) {
        const T* x_rows[kMaxVectorCells / 2];
        T* dx_rows[kMaxVectorCells / 2];
        Vec cells[K::kMax], cell_grads[K::kMax];
        for (int64_t row = begin; row < end; ++row) {
          const int64_t oh = row % g.output[1], od = (row / g.output[1]) % g.output[0];
          const int64_t plane = row / plane_rows, n = plane / channels, c = plane % channels;
          for (int64_t kd = 0; kd < g.kernel[0]; ++kd)
            for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
              const int64_t d = od * g.stride[0] + kd, h = oh * g.stride[1] + kh;
              x_rows[kd * g.kernel[1] + kh] = x + element_offset(input5, n, c, d, h, 0);
              dx_rows[kd * g.kernel[1] + kh] = dx + element_offset(grad_input5, n, c, d, h, 0);
            }
          const T* xp = x + n * input5.stride(0) + c * input5.stride(1);
          const T* dy_row = gy + element_offset(grad5, n, c, od, oh, 0);
          const scalar_t* ln_row = ln + element_offset(log_norm5, n, c, od, oh, 0);
          for (int64_t ow0 = 0; ow0 < g.output[2]; ow0 += kLanes) {
            // Lanes past the row get cells 0 and gradient 0: finite, and not stored.
            const int64_t lanes = std::min(kLanes, g.output[2] - ow0), columns = 2 * lanes;
            for (int64_t r = 0; r < window_rows; ++r) {
              const T* at_column = x_rows[r] + 2 * ow0;
              std::tie(cells[2 * r], cells[2 * r + 1]) = at::vec::deinterleave2(
                  load_widened(at_column, std::min(kLanes, columns)),
                  load_widened(at_column + kLanes, std::max<int64_t>(0, columns - kLanes)));
            }
            const T* dy_at = dy_row + ow0 * grad_column_stride;
            const Vec grad = load_strided(dy_at, grad_column_stride, lanes);
            if (!K::backward(cells, count, grad, Vec::loadu(ln_row + ow0, lanes), cell_grads)) {
              const int64_t index[3] = {od, oh, ow0};
              K::backward_by_lane(xp, 0, xs, g, index, kNextColumn, lanes, dy_at,
                                  grad_column_stride, ln_row + ow0, cell_grads);
            }
            for (int64_t r = 0; r < window_rows; ++r) {
              Vec low, high;
              std::tie(low, high) =
                  at::vec::interleave2(cell_grads[2 * r] + Vec(0), cell_grads[2 * r + 1] + Vec(0));
              store_rounded(low, dx_rows[r] + 2 * ow0, std::min(kLanes, columns));
              if (columns > kLanes)
                store_rounded(high, dx_rows[r] + 2 * ow0 + kLanes, columns - kLanes);
            }
          }
          for (int64_t r = 0; r < window_rows; ++r)
            std::fill(dx_rows[r] + reached, dx_rows[r] + g.input[2], T(0));
        }
      });
  // Rows no window reaches: past the last window, or between windows (kernel < stride).
  const auto reached_along = [&](int dim, int64_t i) {
    return i < g.output[dim] * g.stride[dim] && i % g.stride[dim] < g.kernel[dim];
  };
  std::vector<std::pair<int64_t, int64_t>> unreached;  // (d, h)
  for (int64_t d = 0; d < g.input[0]; ++d)
    for (int64_t h = 0; h < g.input[1]; ++h)
      if (!reached_along(0, d) || !reached_along(1, h)) unreached.emplace_back(d, h);
  if (unreached.empty()) return;
  const int64_t planes = input5.size(0) * channels;
  at::parallel_for(0, planes, grain_for(static_cast<int64_t>(unreached.size()) * g.input[2]),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t plane = begin; plane < end; ++plane)
                       for (const auto& [d, h] : unreached) {
                         T* row = dx + element_offset(grad_input5, plane / channels,
                                                      plane % channels, d, h, 0);
                         std::fill(row, row + g.input[2], T(0));
                       }
                   });
}

}  // namespace

void forward_rows(const at::Tensor& input5, at::Tensor& output5, at::Tensor& log_norm5,
                  const PoolGeometry& g) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, input5.scalar_type(), "soft_pool_forward_rows", [&] {
        with_cell_count<compute_t<scalar_t>>(
            g, [&](auto kernel) { forward<scalar_t>(kernel, input5, output5, log_norm5, g); });
      });
}

void backward_rows(const at::Tensor& grad5, const at::Tensor& input5, const at::Tensor& log_norm5,
                   at::Tensor& grad_input5, const PoolGeometry& g) {
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, input5.scalar_type(), "soft_pool_backward_rows", [&] {
        with_gradient_type<scalar_t>(grad_input5, [&](auto grad_type) {
          using G = decltype(grad_type);
          with_cell_count<compute_t<scalar_t>>(g, [&](auto kernel) {
            if constexpr (std::is_same_v<G, scalar_t>) {
              if (direct_backward(g))
                return backward_direct<scalar_t>(kernel, grad5, input5, log_norm5, grad_input5, g);
            }
            backward<scalar_t, G>(kernel, grad5, input5, log_norm5, grad_input5, g);
          });
        });
      });
}

}  // namespace CPU_CAPABILITY
}  // namespace mmsoftpool

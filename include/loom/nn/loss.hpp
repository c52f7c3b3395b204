// loom/nn/loss.hpp — losses. cross_entropy is one fused, stable kernel over logits and integer labels:
//   loss = mean_b [ (1 - s) * (lse(x_b) - x_b[y_b]) + s * (lse(x_b) - mean_c x_b[c]) ]   (s: smoothing)
//   dx_b = g / B * (softmax(x_b) - (1 - s) * onehot(y_b) - s / C)
#pragma once
#include <cmath>
#include <limits>
#include <stdexcept>

#include "../ops/elementwise.hpp"
#include "../backend/exec.hpp"
#include "../expr/slots.hpp"
#include "../ops/reduce.hpp"

namespace loom::nn {

/// How a loss combines its per-element (or per-sample) terms.
enum class Reduction { mean, sum };

namespace ops {
/// What the label losses share: [B, C] scores (float) against integer labels [B], a scalar result.
struct LabelLoss {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = true;
  template <class X, class Y>
  using value_type = value_t<X>;
  template <class X, class Y>
  using shape = Shape<>;

  bool sum = false;  ///< Reduction::sum instead of the mean over the batch
  /// Divisor of the summed per-sample terms.
  double denom(std::size_t B) const { return sum ? 1.0 : double(B ? B : 1); }
  Dims<0> dims(const Dims<2>& x, const Dims<1>& y) const {
    if (x[0] != y[0])
      throw shape_error("loom::nn: scores " + to_string(x) + " and labels " + to_string(y) +
                        " disagree on the batch size");
    return {};
  }
  template <class L>
  static std::size_t label(L y, std::size_t C) {
    if (y < 0 || static_cast<std::size_t>(y) >= C)
      throw std::out_of_range("loom::nn: label " + std::to_string(y) + " outside [0, " + std::to_string(C) + ")");
    return static_cast<std::size_t>(y);
  }

  // ---- device kernels: one thread per sample --------------------------------------------------------
  template <class L>
  struct BadLabel {  // 1 where a label is outside [0, C)
    const L* y;
    std::ptrdiff_t ys;
    std::size_t C;
    LOOM_HOST_DEVICE std::size_t operator()(std::size_t b) const {
      const L v = y[static_cast<std::ptrdiff_t>(b) * ys];
      return v < 0 || static_cast<std::size_t>(v) >= C ? 1 : 0;
    }
  };
  /// Checks the labels on the device; on a bad one, brings the labels over and throws as the host does.
  template <class D, class L>
  static void check_labels(const loom::detail::View<L, 1>& y, std::size_t C) {
    const std::size_t B = y.dims[0];
    if (backend::device::sum_n<std::size_t>(B, BadLabel<L>{y.data, y.strides[0], C}) == 0) return;
    for (std::size_t b = 0; b < B; ++b) {
      L v{};
      loom::detail::DeviceMemory<D>::to_host(&v, y.data + static_cast<std::ptrdiff_t>(b) * y.strides[0], 1);
      label(v, C);
    }
  }
};

struct CrossEntropy : LabelLoss {
  static constexpr std::string_view name = "cross_entropy";
  double smoothing = 0;
  CrossEntropy(double s, bool summed) : LabelLoss{summed}, smoothing(s) {}
  template <class T, class L>
  static T row_lse(const T* x, std::size_t C, std::ptrdiff_t s) {
    T m = -std::numeric_limits<T>::infinity();
    for (std::size_t c = 0; c < C; ++c) m = std::max(m, x[c * s]);
    T sum = 0;
    for (std::size_t c = 0; c < C; ++c) sum += std::exp(x[c * s] - m);
    return m + std::log(sum);
  }
  template <class T, class L>
  void forward(const loom::detail::View<T, 0>& out, const loom::detail::View<T, 2>& x, const loom::detail::View<L, 1>& y) const {
    const std::size_t B = x.dims[0], C = x.dims[1];
    double total = 0;
    for (std::size_t b = 0; b < B; ++b) {
      const T* row = x.data + b * x.strides[0];
      const T lse = row_lse<T, L>(row, C, x.strides[1]);
      const std::size_t t = label(y.data[b * y.strides[0]], C);
      double mean_x = 0;
      if (smoothing != 0)
        for (std::size_t c = 0; c < C; ++c) mean_x += row[c * x.strides[1]];
      total += (1 - smoothing) * (lse - row[t * x.strides[1]]) + smoothing * (lse - mean_x / double(C));
    }
    *out.data = static_cast<T>(total / denom(B));
  }
  template <class T, class L>
  void backward(const loom::detail::View<T, 0>& g, const loom::detail::View<T, 0>&,
                const std::pair<loom::detail::View<T, 2>, loom::detail::View<T, 2>>& x,
                const std::pair<loom::detail::View<L, 1>, loom::detail::View<L, 1>>& y) const {
    if (!x.second.data) return;
    const std::size_t B = x.first.dims[0], C = x.first.dims[1];
    const T scale = *g.data / T(denom(B));
    for (std::size_t b = 0; b < B; ++b) {
      const T* row = x.first.data + b * x.first.strides[0];
      T* drow = x.second.data + b * x.second.strides[0];
      const T lse = row_lse<T, L>(row, C, x.first.strides[1]);
      const std::size_t t = label(y.first.data[b * y.first.strides[0]], C);
      for (std::size_t c = 0; c < C; ++c) {
        const T p = std::exp(row[c * x.first.strides[1]] - lse);
        const T target = T(c == t ? 1 - smoothing : 0) + T(smoothing / double(C));
        drow[c * x.second.strides[1]] += scale * (p - target);
      }
    }
  }
  // Device: per-sample terms summed by one reduction; the backward writes a row per thread.
  template <class T, class L>
  struct Rows {
    const T* x;
    std::ptrdiff_t xs0, xs1;
    const L* y;
    std::ptrdiff_t ys;
    std::size_t C;
    double smoothing;
    LOOM_HOST_DEVICE T lse(const T* row) const {
      T m = row[0];
      for (std::size_t c = 1; c < C; ++c) m = row[c * xs1] > m ? row[c * xs1] : m;
      T sum = 0;
      for (std::size_t c = 0; c < C; ++c) sum += std::exp(row[c * xs1] - m);
      return m + std::log(sum);
    }
    LOOM_HOST_DEVICE double operator()(std::size_t b) const {  // the sample's loss
      const T* row = x + static_cast<std::ptrdiff_t>(b) * xs0;
      const T l = lse(row);
      const auto t = static_cast<std::size_t>(y[static_cast<std::ptrdiff_t>(b) * ys]);
      double mean_x = 0;
      if (smoothing != 0)
        for (std::size_t c = 0; c < C; ++c) mean_x += row[c * xs1];
      return (1 - smoothing) * double(l - row[t * xs1]) + smoothing * (double(l) - mean_x / double(C));
    }
  };
  template <class T, class L>
  struct RowGrads {
    Rows<T, L> r;
    T* dx;
    std::ptrdiff_t ds0, ds1;
    const T* g;
    T inv_denom;
    LOOM_HOST_DEVICE void operator()(std::size_t b) const {
      const T* row = r.x + static_cast<std::ptrdiff_t>(b) * r.xs0;
      T* drow = dx + static_cast<std::ptrdiff_t>(b) * ds0;
      const T l = r.lse(row), scale = *g * inv_denom;
      const auto t = static_cast<std::size_t>(r.y[static_cast<std::ptrdiff_t>(b) * r.ys]);
      for (std::size_t c = 0; c < r.C; ++c) {
        const T target = T(c == t ? 1 - r.smoothing : 0) + T(r.smoothing / double(r.C));
        drow[c * ds1] += scale * (std::exp(row[c * r.xs1] - l) - target);
      }
    }
  };
  template <class D, class T, class L>
    requires(!HostDevice<D>)
  void forward(on<D>, const loom::detail::View<T, 0>& out, const loom::detail::View<T, 2>& x,
               const loom::detail::View<L, 1>& y) const {
    const std::size_t B = x.dims[0], C = x.dims[1];
    check_labels<D>(y, C);
    const Rows<T, L> rows{x.data, x.strides[0], x.strides[1], y.data, y.strides[0], C, smoothing};
    backend::device::sum_into<double>(B, rows, out.data, denom(B));  // the loss stays on the device
  }
  template <class D, class T, class L>
    requires(!HostDevice<D>)
  void backward(on<D>, const loom::detail::View<T, 0>& g, const loom::detail::View<T, 0>&,
                const std::pair<loom::detail::View<T, 2>, loom::detail::View<T, 2>>& x,
                const std::pair<loom::detail::View<L, 1>, loom::detail::View<L, 1>>& y) const {
    if (!x.second.data) return;
    const auto& v = x.first;
    const Rows<T, L> rows{v.data, v.strides[0], v.strides[1], y.first.data, y.first.strides[0], v.dims[1], smoothing};
    backend::device::for_n(v.dims[0], RowGrads<T, L>{rows, x.second.data, x.second.strides[0], x.second.strides[1], g.data,
                                                     T(1 / denom(v.dims[0]))});
  }
};
/// loss = -mean_b logp[b, y_b];  dlogp[b, c] = -g / B where c == y_b
struct Nll : LabelLoss {
  static constexpr std::string_view name = "nll_loss";
  template <class T, class L>
  void forward(const loom::detail::View<T, 0>& out, const loom::detail::View<T, 2>& x, const loom::detail::View<L, 1>& y) const {
    const std::size_t B = x.dims[0], C = x.dims[1];
    double total = 0;
    for (std::size_t b = 0; b < B; ++b)
      total -= x.data[b * x.strides[0] + label(y.data[b * y.strides[0]], C) * x.strides[1]];
    *out.data = static_cast<T>(total / denom(B));
  }
  template <class T, class L>
  void backward(const loom::detail::View<T, 0>& g, const loom::detail::View<T, 0>&,
                const std::pair<loom::detail::View<T, 2>, loom::detail::View<T, 2>>& x,
                const std::pair<loom::detail::View<L, 1>, loom::detail::View<L, 1>>& y) const {
    if (!x.second.data) return;
    const std::size_t B = x.first.dims[0], C = x.first.dims[1];
    for (std::size_t b = 0; b < B; ++b)
      x.second.data[b * x.second.strides[0] + label(y.first.data[b * y.first.strides[0]], C) * x.second.strides[1]] -=
          *g.data / T(denom(B));
  }
  template <class T, class L>
  struct Picked {  // -logp[b, y_b]; or, with dx set, dx[b, y_b] -= g / denom
    const T* x;
    std::ptrdiff_t xs0, xs1;
    const L* y;
    std::ptrdiff_t ys;
    T* dx = nullptr;
    const T* g = nullptr;
    T inv_denom = 0;
    LOOM_HOST_DEVICE std::ptrdiff_t at(std::size_t b) const {
      return static_cast<std::ptrdiff_t>(b) * xs0 + static_cast<std::ptrdiff_t>(y[static_cast<std::ptrdiff_t>(b) * ys]) * xs1;
    }
    LOOM_HOST_DEVICE double operator()(std::size_t b) const { return -double(x[at(b)]); }
    LOOM_HOST_DEVICE void operator()(std::size_t b, int) const { dx[at(b)] -= *g * inv_denom; }
  };
  template <class T, class L>
  struct PickedGrad {
    Picked<T, L> p;
    LOOM_HOST_DEVICE void operator()(std::size_t b) const { p(b, 0); }
  };
  template <class D, class T, class L>
    requires(!HostDevice<D>)
  void forward(on<D>, const loom::detail::View<T, 0>& out, const loom::detail::View<T, 2>& x,
               const loom::detail::View<L, 1>& y) const {
    check_labels<D>(y, x.dims[1]);
    backend::device::sum_into<double>(x.dims[0], Picked<T, L>{x.data, x.strides[0], x.strides[1], y.data, y.strides[0]}, out.data,
                                      denom(x.dims[0]));
  }
  template <class D, class T, class L>
    requires(!HostDevice<D>)
  void backward(on<D>, const loom::detail::View<T, 0>& g, const loom::detail::View<T, 0>&,
                const std::pair<loom::detail::View<T, 2>, loom::detail::View<T, 2>>& x,
                const std::pair<loom::detail::View<L, 1>, loom::detail::View<L, 1>>& y) const {
    if (!x.second.data) return;
    const auto& d = x.second;  // (labels repeat: rows differ, so every thread writes its own element)
    backend::device::for_n(d.dims[0], PickedGrad<T, L>{{d.data, d.strides[0], d.strides[1], y.first.data, y.first.strides[0],
                                                        d.data, g.data, T(1 / denom(d.dims[0]))}});
  }
};

}  // namespace ops

namespace detail {
template <bool Ok, class Scores, class Labels>
struct check_label_loss {
  static_assert(Ok, "loom::nn::cross_entropy/nll_loss: needs scores [B, C] (float) and integer labels [B] (see "
                    "check_label_loss below)");
  static constexpr bool value = Ok;
};
template <class X, class Y>
constexpr bool label_loss_args = shape_t<X>::rank == 2 && shape_t<Y>::rank == 1 && std::is_integral_v<value_t<Y>> &&
                                 FloatDtype<value_t<X>>;
}  // namespace detail

/// Softmax cross-entropy of logits [B, C] against integer class labels [B], averaged over the batch
/// (or summed: cross_entropy<Reduction::sum>).
template <Reduction R = Reduction::mean, Expression X, Expression Y>
auto cross_entropy(const X& logits, const Y& labels, double label_smoothing = 0.0) {
  constexpr bool ok = detail::label_loss_args<X, Y>;
  detail::check_label_loss<ok, shape_t<X>, shape_t<Y>>{};
  if constexpr (ok) return make_node(ops::CrossEntropy{label_smoothing, R == Reduction::sum}, logits, labels);
}

/// Negative log-likelihood of log-probabilities [B, C] at integer labels [B] (mean or sum over the batch).
template <Reduction R = Reduction::mean, Expression X, Expression Y>
auto nll_loss(const X& log_probs, const Y& labels) {
  constexpr bool ok = detail::label_loss_args<X, Y>;
  detail::check_label_loss<ok, shape_t<X>, shape_t<Y>>{};
  if constexpr (ok) return make_node(ops::Nll{{R == Reduction::sum}}, log_probs, labels);
}

namespace detail {
template <Reduction R, class E>
auto reduce(const E& e) {
  if constexpr (R == Reduction::sum) return loom::sum(e);
  else return loom::mean(e);
}
}  // namespace detail

/// Squared error, averaged over all elements (or summed).
template <Reduction R = Reduction::mean, Expression X, Expression Y>
auto mse_loss(const X& x, const Y& y) { return detail::reduce<R>(pow(x - y, 2)); }
/// Absolute error, averaged over all elements (or summed).
template <Reduction R = Reduction::mean, Expression X, Expression Y>
auto l1_loss(const X& x, const Y& y) { return detail::reduce<R>(abs(x - y)); }
/// Binary cross-entropy on logits (stable: max(x,0) - x*y + log(1 + exp(-|x|))), averaged (or summed).
template <Reduction R = Reduction::mean, Expression X, Expression Y>
auto bce_with_logits(const X& x, const Y& y) { return detail::reduce<R>(relu(x) - x * y + log(exp(-abs(x)) + 1.0)); }

}  // namespace loom::nn

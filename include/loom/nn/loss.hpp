// loom/nn/loss.hpp — losses. cross_entropy is one fused, stable kernel over logits and integer labels:
//   loss = mean_b [ (1 - s) * (lse(x_b) - x_b[y_b]) + s * (lse(x_b) - mean_c x_b[c]) ]   (s: smoothing)
//   dx_b = g / B * (softmax(x_b) - (1 - s) * onehot(y_b) - s / C)
#pragma once
#include <cmath>
#include <limits>
#include <stdexcept>

#include "../ops/elementwise.hpp"
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

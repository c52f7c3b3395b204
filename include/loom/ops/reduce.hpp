// loom/ops/reduce.hpp — reductions over any axes (sum, mean, max) with keepdims, and the stable
// compositions built on them: logsumexp, softmax, log_softmax.
//   sum:  z = sum_A x;               dx = broadcast(g)
//   mean: z = sum_A x / n;           dx = broadcast(g) / n
//   max:  z = max_A x;               dx = broadcast(g) * (x == broadcast(z))   (ties each get g)
// A reduction fuses the elementwise expression it reduces: sum(exp(x - m)) is one loop, no buffer.
#pragma once
#include "elementwise.hpp"

namespace loom {

/// Pass as the last argument of a reduction to keep reduced axes with extent 1.
inline constexpr std::true_type keepdims{};

namespace detail {
template <bool Ok, class S, int Axis>
struct check_axis {
  static_assert(Ok, "loom::reduce: axis out of range for the input's rank (see check_axis below)");
  static constexpr bool value = Ok;
};
}  // namespace detail

namespace ops {

template <bool Max, bool Mean, bool Keep, int... Axes>
struct Reduce {
  static constexpr Kind kind = Kind::reduce;
  static constexpr bool differentiable = true;
  static constexpr std::string_view name = Max ? "max" : Mean ? "mean" : "sum";
  static constexpr bool is_max = Max, is_mean = Mean;

  /// Which axes of a rank-R input are reduced (all when no axis is named).
  template <std::size_t R>
  static constexpr std::array<bool, R> mask = [] {
    std::array<bool, R> m{};
    if constexpr (sizeof...(Axes) == 0) m.fill(true);
    else for (int a : {Axes...}) m[static_cast<std::size_t>(a < 0 ? a + static_cast<int>(R) : a)] = true;
    return m;
  }();
  template <std::size_t R>
  static constexpr std::size_t out_rank = [] {
    if constexpr (Keep) return R;
    std::size_t n = 0;
    for (bool b : mask<R>) n += !b;
    return n;
  }();

  template <class S>
  struct out_extents {
    static constexpr auto value = [] {
      std::array<std::size_t, out_rank<S::rank>> r{};
      std::size_t k = 0;
      for (std::size_t i = 0; i < S::rank; ++i)
        if (!mask<S::rank>[i]) r[k++] = S::extents[i];
        else if (Keep) r[k++] = 1;
      return r;
    }();
  };
  template <class S>
  struct kept_extents {
    static constexpr auto value = [] {
      auto r = S::extents;
      for (std::size_t i = 0; i < S::rank; ++i)
        if (mask<S::rank>[i]) r[i] = 1;
      return r;
    }();
  };
  template <class S>
  using shape = detail::shape_from_array<out_extents<S>>;
  /// The output's shape with the reduced axes kept at extent 1 (how backward reads the gradient).
  template <class S>
  using kept_shape = detail::shape_from_array<kept_extents<S>>;

  template <std::size_t R>
  Dims<R> kept_dims(Dims<R> d) const {
    for (std::size_t i = 0; i < R; ++i)
      if (mask<R>[i]) d[i] = 1;
    return d;
  }
  template <std::size_t R>
  Dims<out_rank<R>> dims(const Dims<R>& d) const {
    Dims<out_rank<R>> r{};
    std::size_t k = 0;
    for (std::size_t i = 0; i < R; ++i)
      if (!mask<R>[i]) r[k++] = d[i];
      else if (Keep) r[k++] = 1;
    return r;
  }
  /// Strides that make the output a destination over the input's extents (0 on reduced axes).
  template <std::size_t R, std::size_t RO>
  Strides<R> kept_strides(const Dims<R>&, const Strides<RO>& os) const {
    Strides<R> r{};
    std::size_t k = 0;
    for (std::size_t i = 0; i < R; ++i) {
      if (!mask<R>[i]) r[i] = os[k++];
      else {
        r[i] = 0;
        if (Keep) ++k;
      }
    }
    return r;
  }
};

}  // namespace ops

namespace detail {
template <bool Max, bool Mean, int... Axes, Expression X, class K>
auto reduce(const X& x, K) {
  [[maybe_unused]]
  constexpr std::size_t R = shape_t<X>::rank;
  constexpr bool ok = ((Axes >= -static_cast<int>(R) && Axes < static_cast<int>(R)) && ... && true);
  (check_axis<(Axes >= -static_cast<int>(R) && Axes < static_cast<int>(R)), shape_t<X>, Axes>{}, ...);
  if constexpr (ok) return make_node(ops::Reduce<Max, Mean, K::value, Axes...>{}, x);
}
}  // namespace detail

/// Sum over Axes (all axes when none is named); `keepdims` keeps them with extent 1.
template <int... Axes, Expression X, class K = std::false_type>
auto sum(const X& x, K k = {}) { return detail::reduce<false, false, Axes...>(x, k); }
template <int... Axes, Expression X, class K = std::false_type>
auto mean(const X& x, K k = {}) { return detail::reduce<false, true, Axes...>(x, k); }
template <int... Axes, Expression X, class K = std::false_type>
auto max(const X& x, K k = {}) { return detail::reduce<true, false, Axes...>(x, k); }

/// log(sum(exp(x))) over Axes, computed as m + log(sum(exp(x - m))) with m = max(x) (detached: the
/// gradient through m cancels exactly, so it is not propagated).
template <int... Axes, Expression X, class K = std::false_type>
auto logsumexp(const X& x, K = {}) {
  auto m = detach(max<Axes...>(x, keepdims));
  auto lse = log(sum<Axes...>(exp(x - m), keepdims)) + m;
  if constexpr (K::value) return lse;
  else return sum<Axes...>(lse);  // drop the kept unit axes (a sum over extent-1 axes)
}
/// exp(x - logsumexp(x)) along Axis.
template <int Axis = -1, Expression X>
auto softmax(const X& x) { return exp(x - logsumexp<Axis>(x, keepdims)); }
/// x - logsumexp(x) along Axis.
template <int Axis = -1, Expression X>
auto log_softmax(const X& x) { return x - logsumexp<Axis>(x, keepdims); }

}  // namespace loom

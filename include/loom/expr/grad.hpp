// loom/expr/grad.hpp — symbolic gradients: grad(f, p) is an expression for d sum(f) / dp, built from
// the same VJPs the compiled backward uses. Because it is an expression it can be compiled,
// fused and differentiated again (Hessian-vector products, gradient penalties).
// Supported: elementwise ops, sum/mean/max, matmul, reshape, permute/transpose, broadcast_to.
#pragma once
#include "../ops/matmul.hpp"
#include "../ops/reduce.hpp"
#include "../ops/shape.hpp"

namespace loom {

namespace ops {
/// z = x where the gate is open, else 0 (selects one parameter among several of the same type).
struct Gate : UnaryOp {
  static constexpr std::string_view name = "gate";
  bool open = true;
  template <class T> LOOM_HOST_DEVICE T apply(T x) const { return open ? x : T{0}; }
  auto vjp(const auto& g, const auto&, const auto&) const { return std::tuple{make_node(Gate{{}, open}, g)}; }
};
/// z = 1 with x's shape (the seed of a symbolic gradient).
struct OnesLike : UnaryOp {
  static constexpr std::string_view name = "ones_like";
  template <class T> LOOM_HOST_DEVICE T apply(T) const { return T{1}; }
  auto vjp(const auto&, const auto&, const auto&) const { return std::tuple{NoGrad{}}; }
};
}  // namespace ops

namespace detail {

template <class T>
struct is_reshape : std::false_type {};
template <ShapeType S>
struct is_reshape<ops::Reshape<S>> : std::true_type {};
template <class T>
struct is_broadcast : std::false_type {};
template <ShapeType S>
struct is_broadcast<ops::BroadcastTo<S>> : std::true_type {};
template <class T>
struct permutation {
  static constexpr bool value = false;
};
template <std::size_t... I>
struct permutation<ops::Permute<I...>> {
  static constexpr bool value = true;
  static constexpr std::array<std::size_t, sizeof...(I)> inverse = [] {
    std::array<std::size_t, sizeof...(I)> fwd{I...}, inv{};
    for (std::size_t k = 0; k < fwd.size(); ++k) inv[fwd[k]] = k;
    return inv;
  }();
};

/// Axes of X that sum away to reach shape S (right-aligned broadcasting in reverse).
template <class X, class S>
struct unbroadcast_axes {
  static constexpr std::size_t lead = X::rank - S::rank;
  static constexpr auto value = [] {
    std::array<int, X::rank> a{};
    std::size_t n = 0;
    for (std::size_t i = 0; i < X::rank; ++i)
      if (i < lead || (S::extents[i - lead] == 1 && X::extents[i] != 1)) a[n++] = static_cast<int>(i);
    return std::pair{a, n};
  }();
};

/// Sums a gradient of shape shape_t<X> down to shape S (inverse of broadcasting S to it).
template <ShapeType S, Expression X>
auto reduce_to(const X& x) {
  using SX = shape_t<X>;
  if constexpr (std::is_same_v<SX, S>) {
    return x;
  } else {
    static_assert(SX::rank >= S::rank, "loom::grad: gradient has lower rank than its input");
    constexpr auto ax = unbroadcast_axes<SX, S>::value;
    auto summed = [&]<std::size_t... I>(std::index_sequence<I...>) {
      return sum<ax.first[I]...>(x, keepdims);
    }(std::make_index_sequence<ax.second>{});
    return reshape<S>(summed);
  }
}

template <class E, class GE, class P>
auto sgrad(const E& e, const GE& g, const P& p);

inline NoGrad add_all() { return {}; }
template <class A, class... R>
auto add_all(const A& a, const R&... r) {
  auto rest = add_all(r...);
  if constexpr (is_nograd<A>) return rest;
  else if constexpr (is_nograd<decltype(rest)>) return a;
  else return a + rest;
}

template <std::size_t I, class E, class GI, class P>
auto sgrad_child(const E& e, const GI& gi, const P& p) {
  using C = child_t<E, I>;
  if constexpr (is_nograd<GI> || !C::requires_grad) return NoGrad{};
  else return sgrad(e.template arg<I>(), reduce_to<shape_t<C>>(gi), p);
}

template <class E, class GE, class P>
auto sgrad(const E& e, const GE& g, const P& p) {
  if constexpr (!E::requires_grad) {
    return NoGrad{};
  } else if constexpr (E::kind == Kind::leaf) {
    if constexpr (std::is_same_v<E, P>) return make_node(ops::Gate{{}, e.identity() == p.identity()}, g);
    else return NoGrad{};
  } else {
    using Op = std::remove_cvref_t<decltype(e.op)>;
    if constexpr (E::kind == Kind::elementwise) {
      auto grads = [&]<std::size_t... I>(std::index_sequence<I...>) {
        return e.op.vjp(g, e, e.template arg<I>()...);
      }(std::make_index_sequence<E::arity>{});
      return [&]<std::size_t... I>(std::index_sequence<I...>) {
        return add_all(sgrad_child<I>(e, std::get<I>(grads), p)...);
      }(std::make_index_sequence<E::arity>{});
    } else if constexpr (E::kind == Kind::reduce) {
      using C = child_t<E, 0>;
      using Kept = typename Op::template kept_shape<shape_t<C>>;
      const auto& x = e.template arg<0>();
      auto gk = broadcast_to<shape_t<C>>(reshape<Kept>(materialize(g)));
      if constexpr (Op::is_max) return sgrad(x, gk * equal(x, broadcast_to<shape_t<C>>(reshape<Kept>(e))), p);
      else if constexpr (Op::is_mean) {
        static_assert(shape_t<C>::is_static, "loom::grad: mean over dyn extents is not supported by symbolic grad");
        constexpr double n = double(shape_t<C>::static_size) / double(Kept::static_size);
        return sgrad(x, gk * (1.0 / n), p);
      } else {
        return sgrad(x, gk, p);
      }
    } else if constexpr (std::is_same_v<Op, ops::MatMul>) {
      const auto& a = e.template arg<0>();
      const auto& b = e.template arg<1>();
      return add_all(sgrad_child<0>(e, matmul(g, transpose(b)), p), sgrad_child<1>(e, matmul(transpose(a), g), p));
    } else if constexpr (is_reshape<Op>::value) {
      return sgrad(e.template arg<0>(), reshape<shape_t<child_t<E, 0>>>(materialize(g)), p);
    } else if constexpr (is_broadcast<Op>::value) {
      return sgrad(e.template arg<0>(), reduce_to<shape_t<child_t<E, 0>>>(g), p);
    } else if constexpr (permutation<Op>::value) {
      constexpr auto inv = permutation<Op>::inverse;
      return [&]<std::size_t... K>(std::index_sequence<K...>) {
        return sgrad(e.template arg<0>(), permute<inv[K]...>(materialize(g)), p);
      }(std::make_index_sequence<inv.size()>{});
    } else {
      static_assert(is_reshape<Op>::value, "loom::grad: this op is not supported by symbolic grad yet");
    }
  }
}

}  // namespace detail

/// d sum(f) / dp as an expression of p's shape (zeros when f does not depend on p).
template <Expression F, class T, class S, class D>
auto grad(const F& f, const Param<T, S, D>& p) {
  auto g = detail::sgrad(f, make_node(ops::OnesLike{}, f), p);
  if constexpr (detail::is_nograd<decltype(g)>) return Constant<T, S, D>(Tensor<T, S, D>{});
  else return g;
}

}  // namespace loom

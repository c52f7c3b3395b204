// loom/ops/op.hpp — what op families share: base traits and the scalar-lifting helpers.
#pragma once
#include <Eigen/Core>
#include <type_traits>

#include "../expr/expr.hpp"

namespace loom {

namespace detail {
template <class... S>
struct broadcast_all;
template <class S>
struct broadcast_all<S> {
  using type = S;
};
template <class A, class B, class... R>
struct broadcast_all<A, B, R...> {
  using type = typename broadcast_all<broadcast_t<A, B>, R...>::type;
};
}  // namespace detail

/// Elementwise ops: shape is the broadcast of the arguments; the program fuses them.
struct ElementwiseOp {
  static constexpr Kind kind = Kind::elementwise;
  static constexpr bool differentiable = true;
  template <class... S>
  using shape = typename detail::broadcast_all<S...>::type;
};

/// An arithmetic value or an expression, as an expression with E's dtype and device.
template <class E, class X>
auto lift(const X& x) {
  if constexpr (Expression<X>) return x;
  else return Scalar<value_t<E>, device_t<E>>(static_cast<value_t<E>>(x));
}

template <class X, class Y>
concept ExprOrScalar = (Expression<X> && (Expression<Y> || std::is_arithmetic_v<Y>)) ||
                       (std::is_arithmetic_v<X> && Expression<Y>);

/// Element type of a mixed expression/scalar pair (the expression's).
template <class X, class Y>
using operand_t = std::conditional_t<Expression<X>, X, Y>;

namespace detail {
template <class... X>
struct first_expr {
  using type = void;
};
template <class X, class... R>
struct first_expr<X, R...> {
  using type = std::conditional_t<Expression<X>, X, typename first_expr<R...>::type>;
};

/// Two static extents that may be equal at run time.
constexpr bool ext_eq(std::size_t a, std::size_t b) { return a == dyn || b == dyn || a == b; }

/// Folds the broadcast check over the argument shapes, left to right.
template <class Acc, class... S>
struct check_broadcast_all {
  static constexpr bool ok = true;
  static constexpr bool value = true;
};
template <class Acc, class S, class... R>
struct check_broadcast_all<Acc, S, R...> {
  static constexpr bool here = check_broadcast<broadcastable_v<Acc, S>, Acc, S>::value;
  static constexpr bool ok =
      here && std::conditional_t<here, check_broadcast_all<broadcast_t<Acc, std::conditional_t<here, S, Acc>>, R...>,
                                 std::true_type>::value;
  static constexpr bool value = ok;
};
}  // namespace detail

/// Builds an elementwise node over expressions and scalars, checking broadcasting at compile time.
template <class Op, class... X>
auto elementwise(Op op, const X&... x) {
  using E = typename detail::first_expr<X...>::type;
  static_assert(!std::is_void_v<E>, "loom: an elementwise op needs at least one expression operand");
  if constexpr (detail::check_broadcast_all<Shape<>, shape_t<decltype(lift<E>(x))>...>::ok)
    return make_node(std::move(op), lift<E>(x)...);
}

}  // namespace loom

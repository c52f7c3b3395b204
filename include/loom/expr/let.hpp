// loom/expr/let.hpp — shared values: let(x, f) names the value of x once and hands f a small leaf that
// refers to it, so an expression reading x several times (a residual x + f(x)) holds x's type once.
// Without it an expression is a tree and a value used k times is instantiated k times; with it the
// type of a stack of residual blocks grows linearly with depth instead of exponentially.
#pragma once
#include "graph.hpp"

namespace loom {

namespace detail {
inline std::size_t next_let_id() {
  static std::atomic<std::size_t> n{1};
  return n++;
}
}  // namespace detail

/// let(x, f): f(r) with r a reference to x's value, computed once. `r` may be used any number of times
/// inside f and must not escape it.
template <Expression X, class F>
auto let(const X& x, F&& f) {
  using Ref = LetRef<value_t<X>, shape_t<X>, detail::type_hash<X>::value, device_t<X>, X::requires_grad,
                     detail::grad_aliases<X>()>;
  const std::size_t id = detail::next_let_id();
  Ref r;
  r.id = id;
  auto body = std::forward<F>(f)(r);
  static_assert(Expression<decltype(body)>, "loom::let: the body must return an expression");
  return Node<ops::Let, X, decltype(body)>(ops::Let{id}, x, std::move(body));
}

}  // namespace loom

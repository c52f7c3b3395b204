// tests/support/extents.hpp — the extents of an expression's value, for tests that size a tensor of
// weights to it.
#pragma once
#include <loom/loom.hpp>

namespace loom::testing {

/// The extents of e's value: its static shape's, or where they are known only at run time (a strided
/// slice) a program's answer.
template <class E>
auto extents_of(const E& e) {
  using S = shape_t<E>;
  if constexpr (S::is_static) return S::dims_or(0);
  else return compile(e).forward().dims();
}

}  // namespace loom::testing

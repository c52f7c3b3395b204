// let(x, f): a value named once and read through references. Values and gradients equal the tree
// written out; deep residual stacks have a node count linear in depth; misuse is an error.
#include <doctest/doctest.h>
#include <loom/loom.hpp>

#include "../support/gradcheck.hpp"

using namespace loom;
using loom::testing::gradcheck;
using loom::testing::param;

namespace {
/// A residual MLP block r + W2 tanh(W1 r + b) over rows of width 4.
template <class P, class B, class X>
auto block(const P& w1, const B& b1, const P& w2, const X& x) {
  return let(x, [&](auto r) { return r + matmul(tanh(matmul(r, w1) + b1), w2); });
}
template <class P, class B, class X>
auto block_tree(const P& w1, const B& b1, const P& w2, const X& x) {
  return x + matmul(tanh(matmul(x, w1) + b1), w2);
}
template <std::size_t L, class P, class B, class X>
auto stack(const P& w1, const B& b1, const P& w2, const X& x) {
  if constexpr (L == 0) return x;
  else return stack<L - 1>(w1, b1, w2, block(w1, b1, w2, x));
}
}  // namespace

TEST_CASE("let: values and gradients equal the expression written as a tree") {
  auto x = param<Shape<3, 4>>(1);
  auto w1 = param<Shape<4, 4>>(2), w2 = param<Shape<4, 4>>(3);
  auto b1 = param<Shape<4>>(4);
  auto tree = compile(sum(block_tree(w1, b1, w2, block_tree(w1, b1, w2, matmul(x, w1)))));
  auto shared = compile(sum(block(w1, b1, w2, block(w1, b1, w2, matmul(x, w1)))));
  const double want = tree.forward().item();
  tree.backward();
  const auto gx = x.grad().clone();
  const auto g1 = w1.grad().clone(), g2 = w2.grad().clone();
  const auto gb = b1.grad().clone();
  x.zero_grad(), w1.zero_grad(), w2.zero_grad(), b1.zero_grad();
  CHECK(shared.forward().item() == doctest::Approx(want).epsilon(1e-12));
  shared.backward();
  auto close = [](const auto& a, const auto& b) {
    bool ok = true;
    for (std::size_t i = 0; i < a.size(); ++i) ok = ok && std::abs(a.data()[i] - b.data()[i]) < 1e-12;
    return ok;
  };
  CHECK(close(x.grad(), gx));
  CHECK(close(w1.grad(), g1));
  CHECK(close(w2.grad(), g2));
  CHECK(close(b1.grad(), gb));
  // the tree writes the residual input twice per block, the let once
  CHECK(shared.stats().nodes < tree.stats().nodes);
}

TEST_CASE("let: gradient checks (kernel, elementwise, view and leaf definitions; nested; copied)") {
  auto x = param<Shape<3, 4>>(11);
  auto w = param<Shape<4, 4>>(12);
  auto b = param<Shape<4>>(13);
  // a kernel (matmul) definition read three times
  gradcheck([&] { return let(matmul(x, w), [](auto r) { return r * r + tanh(r) * r; }); }, x, w);
  // an elementwise definition (it gets its own buffer; the body's loop reads it)
  gradcheck([&] { return let(x * 2.0 + b, [&](auto r) { return matmul(r, w) + r; }); }, x, w, b);
  // a view definition (its gradient lands in the underlying parameter's gradient)
  gradcheck([&] { return let(transpose(x), [&](auto r) { return matmul(r, x) + sum<1>(r * r); }); }, x);
  // a leaf definition
  gradcheck([&] { return let(x, [&](auto r) { return exp(r) * r; }); }, x);
  // nested: the inner body reads both the outer and the inner reference
  gradcheck([&] {
    return let(matmul(x, w), [&](auto r) { return let(tanh(r) + b, [&](auto s) { return s * r + s; }); });
  }, x, w, b);
  // one let used twice in a tree: both copies are the same value
  gradcheck([&] {
    auto y = let(matmul(x, w), [](auto r) { return sigmoid(r) * r; });
    return y + y * y;
  }, x, w);
}

TEST_CASE("let: a residual stack's node count is linear in depth and it trains like the tree") {
  using S4 = Shape<2, 4>;
  auto x = param<S4>(21);
  auto w1 = param<Shape<4, 4>>(22), w2 = param<Shape<4, 4>>(23);
  auto b1 = param<Shape<4>>(24);
  using D1 = decltype(stack<1>(w1, b1, w2, x));
  using D8 = decltype(stack<8>(w1, b1, w2, x));
  using D32 = decltype(stack<32>(w1, b1, w2, x));
  static_assert(D8::node_count - 1 == 8 * (D1::node_count - 1));
  static_assert(D32::node_count - 1 == 32 * (D1::node_count - 1));
  // (32 blocks written as a tree would hold 2^32 copies of x; the type above is built in no time)
  auto p = compile(sum(stack<8>(w1, b1, w2, x)));
  CHECK(std::isfinite(p.forward().item()));
  gradcheck([&] { return stack<4>(w1, b1, w2, x); }, x, w1, w2, b1);
}

TEST_CASE("let: describe() shows the reference reading its definition; an escaped reference is an error") {
  auto x = param<Shape<3>>(31);
  auto p = compile(sum(let(x * 2.0, [](auto r) { return r * r; })));
  p.forward();
  const auto d = p.describe();
  CHECK(d.find("ref(%") != std::string::npos);
  CHECK(d.find("let(") != std::string::npos);
  // a reference taken out of its let and used elsewhere has no definition to read
  std::remove_cvref_t<decltype(let(x * 2.0, [](auto r) { return r; }).template arg<1>())> escaped{};
  (void)let(x * 2.0, [&](auto r) {
    escaped = r;
    return r;
  });
  CHECK_THROWS_AS(compile(sum(escaped * 3.0)), std::logic_error);
}

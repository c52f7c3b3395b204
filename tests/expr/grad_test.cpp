// Symbolic gradients: grad(f, p) is an expression; it matches the compiled backward, and
// differentiating it again gives Hessian-vector products that match finite differences.
#include "../support/gradcheck.hpp"

using namespace loom;
using loom::testing::param;

namespace {
/// Runs the compiled backward of sum(f) and returns a copy of p's gradient.
template <class F, class P>
auto backward_grad(const F& f, const P& p) {
  auto step = compile(sum(f));
  p.zero_grad();
  step.forward();
  step.backward();
  return p.grad().clone();
}
}  // namespace

TEST_CASE("grad: symbolic gradients equal the compiled backward") {
  auto w = param<Shape<4, 3>>(31);
  auto w2 = param<Shape<4, 3>>(32);  // same type as w: must get no contribution from w's path
  auto b = param<Shape<3>>(33);
  auto x = param<Shape<5, 4>>(34);
  auto f = [&] { return tanh(matmul(x, w) + b) * sigmoid(matmul(x, w2)) + mean<0>(exp(matmul(x, w) * 0.1)); };
  for (int which = 0; which < 3; ++which) {
    auto check = [&](const auto& p) {
      auto g = compile(grad(f(), p));
      const auto symbolic = g.forward().clone();
      CHECK(allclose(symbolic, backward_grad(f(), p), 1e-10, 1e-12));
    };
    if (which == 0) check(w);
    if (which == 1) check(w2);
    if (which == 2) check(b);
  }
  auto r = compile(grad(sum<1>(permute<1, 0, 2>(broadcast_to<Shape<2, 5, 4>>(x)) * 1.0), x));
  CHECK(allclose(r.forward().clone(), backward_grad(sum<1>(permute<1, 0, 2>(broadcast_to<Shape<2, 5, 4>>(x)) * 1.0), x)));
}

TEST_CASE("grad: grad of grad gives Hessian-vector products (vs finite differences)") {
  auto w = param<Shape<4, 3>>(35);
  auto x = param<Shape<6, 4>>(36);
  auto f = [&] {  // tanh and sigmoid: their slopes (TanhSlope, SigmoidSlope) are differentiated here
    return sum(pow(tanh(matmul(x, w)), 2) + sigmoid(matmul(x, w) * 0.7) * 0.5 + max<1>(matmul(x, w), keepdims) * 0.3);
  };
  Generator gen(37);
  auto v = uniform<double, Shape<4, 3>>(gen, -1, 1);
  // H v = d/dw <grad f(w), v>
  auto hvp = compile(sum(grad(f(), w) * Constant<double, Shape<4, 3>>(v)));
  w.zero_grad();
  hvp.forward();
  hvp.backward();
  const auto hv = w.grad().clone();
  // Finite differences of the compiled gradient along v.
  auto gf = compile(f());
  const auto w0 = w.value().clone();
  auto grad_at = [&](double t) {
    w.value().assign(w0);
    w.value().for_each([](double&) {});
    std::size_t k = 0;
    w.value().for_each([&](double& a) { a += t * v.data()[k++]; });
    w.zero_grad();
    gf.forward();
    gf.backward();
    return w.grad().clone();
  };
  const double h = 1e-5;
  const auto gp = grad_at(h), gm = grad_at(-h);
  w.value().assign(w0);
  for (std::size_t i = 0; i < hv.size(); ++i) {
    const double fd = (gp.data()[i] - gm.data()[i]) / (2 * h);
    CHECK(hv.data()[i] == doctest::Approx(fd).epsilon(1e-6));
  }
}

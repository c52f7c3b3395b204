// tests/support/gradcheck.hpp — central-difference gradient checks (double precision) for any
// expression over Params: loss = sum(f(params) * R) with a fixed random R, so every output element
// contributes with its own weight.
#pragma once
#include <doctest/doctest.h>
#include <loom/loom.hpp>

#include <cmath>
#include <string>

#include "extents.hpp"

namespace loom::testing {

struct GradcheckResult {
  double max_abs_err = 0;
  std::size_t checked = 0;
};

template <class Make, class... P>
GradcheckResult gradcheck(Make make, const P&... params) {
  auto e = make();
  using E = decltype(e);
  using S = shape_t<E>;
  const auto dims = extents_of(e);
  Generator gen(1234);
  Constant<double, S> weights(uniform<double, S>(gen, -1, 1, dims));
  auto program = compile(sum(e * weights));
  (params.zero_grad(), ...);
  program.forward();
  program.backward();
  GradcheckResult res;
  auto check_param = [&](const auto& p) {
    const auto value = p.value();
    const auto grad = p.grad().clone();
    std::size_t k = 0;
    value.for_each([&](double& x) {
      const double old = x, h = 1e-6 * std::max(1.0, std::abs(old));
      x = old + h;
      const double fp = program.forward().item();
      x = old - h;
      const double fm = program.forward().item();
      x = old;
      const double numeric = (fp - fm) / (2 * h);
      const double analytic = grad.data()[k++];
      const double err = std::abs(numeric - analytic) / std::max(1.0, std::abs(numeric));
      res.max_abs_err = std::max(res.max_abs_err, err);
      ++res.checked;
      CHECK_MESSAGE(err < 1e-6, "analytic " << analytic << " vs numeric " << numeric << " at element " << k - 1);
    });
  };
  (check_param(params), ...);
  CHECK(res.checked > 0);
  return res;
}

template <class S>
Param<double, S> param(std::uint64_t seed, double lo = -1, double hi = 1) {
  Generator g(seed);
  return Param<double, S>(uniform<double, S>(g, lo, hi));
}

}  // namespace loom::testing

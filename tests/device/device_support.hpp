// Shared by the device tests (device_test.cpp: ops; device_train_test.cpp: training): every expression is
// compiled twice, over cpu and over gpu tensors holding the same values, and values and gradients must agree.
#pragma once
#include <doctest/doctest.h>
#include <loom/loom.hpp>

#include <algorithm>
#include <stdexcept>

using namespace loom;
// (`cuda` alone is ambiguous here: CCCL's headers declare a global namespace ::cuda)
using gpu = loom::cuda;

namespace {

/// The same parameter values on both devices.
template <class S, class T = float>
struct Twin {
  Param<T, S, cpu> h;
  Param<T, S, gpu> d;
};
template <class S, class T = float>
Twin<S, T> twin(std::uint64_t seed, double lo = -1, double hi = 1) {
  Generator g(seed);
  const auto t = uniform<T, S>(g, lo, hi);
  return {Param<T, S, cpu>(t), Param<T, S, gpu>(t.template to<gpu>())};
}

template <class T, class S1, class S2>
void check_close(const Tensor<T, S1, cpu>& host, const Tensor<T, S2, gpu>& dev, double tol) {
  const auto d = dev.template to<cpu>();
  REQUIRE(host.dims() == d.dims());
  CHECK_MESSAGE(allclose(d, host, tol, tol), "device " << d << "\nhost " << host);
}

/// f over the cpu twins and over the gpu twins: equal values and equal gradients, from one program per
/// device, f * w with w in [1, 2] (fixed per element): its forward checks f's values (|w| >= 1, so a value
/// off by x on a device is off by at least x in f * w, and the relative tolerance is unchanged), and its
/// backward the gradients of sum(f * w). (One program per device, not one for the values and one for
/// the gradients: the device tests' build time is mostly their programs, compiled three times in CI.)
template <class F, class... Tw>
void same_on_both(F f, double tol, const Tw&... tw) {
  auto eh = f(tw.h...);
  auto ed = f(tw.d...);
  using T = value_t<decltype(eh)>;
  using S = shape_t<decltype(eh)>;
  static_assert(S::is_static, "same_on_both: the weights take the expression's static shape");
  Generator g(99);
  const auto w = uniform<T, S>(g, 1, 2);
  auto ph = compile(eh * Constant<T, S, cpu>(w));
  auto pd = compile(ed * Constant<T, S, gpu>(w.template to<gpu>()));
  (tw.h.zero_grad(), ...);
  (tw.d.zero_grad(), ...);
  check_close(ph.forward().clone(), pd.forward(), tol);
  ph.backward();
  pd.backward();
  (check_close(tw.h.grad(), tw.d.grad(), tol), ...);
}

}  // namespace

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

/// f over the cpu twins and over the gpu twins: equal values, and equal gradients of sum(f * w).
template <class F, class... Tw>
void same_on_both(F f, double tol, const Tw&... tw) {
  auto eh = f(tw.h...);
  auto ed = f(tw.d...);
  using T = value_t<decltype(eh)>;
  using S = shape_t<decltype(eh)>;
  auto vh = compile(materialize(eh));
  auto vd = compile(materialize(ed));
  const auto yh = vh.forward().clone();
  check_close(yh, vd.forward(), tol);

  Generator g(99);
  const auto w = uniform<T, S>(g, -1, 1, yh.dims());
  auto ph = compile(sum(eh * Constant<T, S, cpu>(w)));
  auto pd = compile(sum(ed * Constant<T, S, gpu>(w.template to<gpu>())));
  (tw.h.zero_grad(), ...);
  (tw.d.zero_grad(), ...);
  // The loss is a sum, reduced in another order on each device (the host folds packets): equal up to
  // float rounding (1e-6) even where tol = 0 asks the values and gradients to be bit-identical.
  check_close(ph.forward().clone(), pd.forward(), std::max(tol, 1e-6));
  ph.backward();
  pd.backward();
  (check_close(tw.h.grad(), tw.d.grad(), tol), ...);
}

}  // namespace

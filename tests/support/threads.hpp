// Host kernels that split their work over OpenMP threads must give the one-thread results.
#pragma once
#include <doctest/doctest.h>
#include <loom/loom.hpp>

#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace loom::testing {

/// A tensor's elements as doubles, in row-major order.
template <class T, class S>
std::vector<double> values(const Tensor<T, S>& t) {
  std::vector<double> v;
  t.for_each([&](const T& e) { v.push_back(static_cast<double>(e)); });
  return v;
}

#ifdef _OPENMP
/// Restores the OpenMP thread count it found, also when a REQUIRE ends the test early.
struct RestoreThreads {
  int saved = omp_get_max_threads();
  ~RestoreThreads() { omp_set_num_threads(saved); }
};
/// Runs run() on one thread, then on 2 and 3 (uneven splits), and calls check(result, one-thread result).
template <class Run, class Check>
void same_on_threads(Run&& run, Check&& check) {
  RestoreThreads restore;
  omp_set_num_threads(1);
  const auto one = run();
  for (const int t : {2, 3}) {
    CAPTURE(t);
    omp_set_num_threads(t);
    check(run(), one);
  }
}
#endif

}  // namespace loom::testing

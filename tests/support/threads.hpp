// Tests that run the same work on several OpenMP thread counts restore the caller's count on exit.
#pragma once
#ifdef _OPENMP
#include <omp.h>

namespace loom::testing {
/// Restores the OpenMP thread count it found, also when a REQUIRE ends the test early.
struct RestoreThreads {
  int saved = omp_get_max_threads();
  ~RestoreThreads() { omp_set_num_threads(saved); }
};
}  // namespace loom::testing
#endif

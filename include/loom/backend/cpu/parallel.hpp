// loom/backend/cpu/parallel.hpp — independent rows of a host kernel over OpenMP threads.
#pragma once
#include <cstddef>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace loom::backend::cpu {

/// True inside an active OpenMP parallel region: a caller already runs this on one of several threads.
inline bool in_parallel() {
#ifdef _OPENMP
  return omp_in_parallel();
#else
  return false;
#endif
}

/// How many threads a kernel may start here: OpenMP's maximum outside a parallel region; 1 inside one
/// (its caller threads) or without OpenMP.
inline int free_threads() {
#ifdef _OPENMP
  return in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

/// Runs f(k) for every row k (a channel, a pooling plane, ...) of about D elements' work, on OpenMP
/// threads when there are several rows, 2^15 elements in all and no enclosing parallel region; rows
/// must touch disjoint outputs. Each row is one thread's, so results do not depend on the thread count.
template <class F>
void each_row(std::size_t rows, std::size_t D, F&& f) {
#ifdef _OPENMP
  if (rows > 1 && rows * D >= (std::size_t{1} << 15) && free_threads() > 1) {
    const auto n = static_cast<std::ptrdiff_t>(rows);
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t k = 0; k < n; ++k) f(static_cast<std::size_t>(k));
    return;
  }
#endif
  (void)D;
  for (std::size_t k = 0; k < rows; ++k) f(k);
}

}  // namespace loom::backend::cpu

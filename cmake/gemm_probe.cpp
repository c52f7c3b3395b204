// Configure-time measurement behind LOOM_USE_BLAS=AUTO: single-precision GEMM through loom's own
// product (backend/cpu/gemm.hpp on Eigen's kernel, built without LOOM_USE_CBLAS) and through
// cblas_sgemm, one thread each, at the shapes of the performance issue's matmul targets
// (64^3, 256^3, 64x784x256) and one larger (512^3). Each shape's time is the fastest of nine alternating
// rounds of ~10 ms per kernel, so a drifting host gives both the same quiet moments. Prints a line per
// shape and, last, "choice: blas" when the BLAS's geometric-mean time is below 0.97x Eigen's, else
// "choice: eigen" (a tie keeps Eigen, which needs no library).
#include <cblas.h>

#include <loom/backend/cpu/gemm.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

extern "C" void openblas_set_num_threads(int) __attribute__((weak));
extern "C" int openblas_get_parallel(void) __attribute__((weak));

namespace {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class F>
double seconds_per_call(F&& f, int reps) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
}

}  // namespace

int main() {
  if (openblas_set_num_threads) openblas_set_num_threads(1);
  if (openblas_get_parallel) std::printf("OpenBLAS threading: %s\n", openblas_get_parallel() == 2 ? "OpenMP" : openblas_get_parallel() == 1 ? "its own threads" : "none");
  Eigen::setNbThreads(1);
  const int shapes[][3] = {{64, 64, 64}, {256, 256, 256}, {64, 784, 256}, {512, 512, 512}};
  double log_ratio = 0;
  for (const auto& s : shapes) {
    const int m = s[0], k = s[1], n = s[2];
    Matrix a = Matrix::Random(m, k), b = Matrix::Random(k, n), c(m, n);
    using View = loom::detail::View<float, 2>;
    const auto M = std::size_t(m), K = std::size_t(k), N = std::size_t(n);
    const std::ptrdiff_t k_ = k, n_ = n;
    const View va{a.data(), {M, K}, {k_, 1}}, vb{b.data(), {K, N}, {n_, 1}}, vc{c.data(), {M, N}, {n_, 1}};
    auto eigen = [&] { loom::backend::cpu::gemm(vc, va, vb, false); };
    auto blas = [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.f, a.data(), k, b.data(), n, 0.f, c.data(), n);
    };
    eigen();
    blas();
    const int reps = std::max(1, static_cast<int>(0.01 / (2e-11 * m * k * n)));  // ~10 ms at 50 GFLOP/s
    double te = 1e30, tb = 1e30;
    for (int round = 0; round < 9; ++round) {
      te = std::min(te, seconds_per_call(eigen, reps));
      tb = std::min(tb, seconds_per_call(blas, reps));
    }
    log_ratio += std::log(tb / te);
    std::printf("%dx%dx%d: Eigen %.1f GFLOP/s, BLAS %.1f GFLOP/s\n", m, k, n, 2e-9 * m * k * n / te, 2e-9 * m * k * n / tb);
  }
  const double ratio = std::exp(log_ratio / (sizeof shapes / sizeof shapes[0]));
  std::printf("BLAS / Eigen time (geometric mean): %.3f\nchoice: %s\n", ratio, ratio < 0.97 ? "blas" : "eigen");
}

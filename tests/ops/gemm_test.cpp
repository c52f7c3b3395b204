// The host GEMM (backend/cpu/gemm.hpp) on every path it takes: rank-1 and GEMV shortcuts, Eigen's
// kernel on one thread and split over threads, called from inside a parallel region (conv's samples,
// attention's heads), the plain loop for other strides; and, in the builds with LOOM_USE_CBLAS (the
// suite where LOOM_USE_BLAS chose the BLAS; loom_gemm_blas_pthread_tests, loom_gemm_blas_openmp_tests),
// the BLAS where gemm.hpp routes to it for the way it threads. Row- and column-major operands, padded leading dimensions, C = A B and C += A B, float and
// double, against a double-precision sum.
#include <doctest/doctest.h>
#include <loom/backend/cpu/gemm.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../support/threads.hpp"

using loom::detail::View;

namespace {

enum class Layout { row, col, padded_row, padded_col, strided };
const char* name(Layout l) {
  switch (l) {
    case Layout::row: return "row-major";
    case Layout::col: return "column-major";
    case Layout::padded_row: return "row-major, padded rows";
    case Layout::padded_col: return "column-major, padded columns";
    case Layout::strided: return "every other element";
  }
  return "?";
}

/// An r x c matrix stored in `layout`, its elements drawn from [-1, 1) (slack elements too: a kernel
/// that reads or writes outside the view changes them).
template <class T>
struct Matrix {
  std::size_t r, c;
  Layout layout;
  std::vector<T> store;
  View<T, 2> view;
  Matrix(std::size_t r_, std::size_t c_, Layout l, std::mt19937& rng) : r(r_), c(c_), layout(l) {
    const auto R = static_cast<std::ptrdiff_t>(r), C = static_cast<std::ptrdiff_t>(c);
    loom::Strides<2> s{};
    switch (l) {
      case Layout::row: s = {C, 1}; break;
      case Layout::col: s = {1, R}; break;
      case Layout::padded_row: s = {C + 3, 1}; break;
      case Layout::padded_col: s = {1, R + 5}; break;
      case Layout::strided: s = {2 * C, 2}; break;
    }
    const std::size_t n = r == 0 || c == 0 ? 1 : static_cast<std::size_t>((R - 1) * s[0] + (C - 1) * s[1] + 1);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    store.resize(n + 7);
    for (auto& e : store) e = static_cast<T>(u(rng));
    view = {store.data(), {r, c}, s};
  }
  T& at(std::size_t i, std::size_t j) { return view.data[static_cast<std::ptrdiff_t>(i) * view.strides[0] + static_cast<std::ptrdiff_t>(j) * view.strides[1]]; }
};

/// Runs C (+)= A B and checks every element against the double sum within the rounding bound of a
/// K-term float/double dot product (K u sum_k |a_ik b_kj|, plus |c| u when accumulating), and that the
/// elements of C's storage outside the view are untouched.
template <class T>
void check_product(std::size_t M, std::size_t K, std::size_t N, Layout la, Layout lb, Layout lc, bool accumulate, std::mt19937& rng) {
  Matrix<T> A(M, K, la, rng), B(K, N, lb, rng), C(M, N, lc, rng);
  const auto before = C.store;
  std::vector<double> want(M * N), bound(M * N);
  for (std::size_t i = 0; i < M; ++i)
    for (std::size_t j = 0; j < N; ++j) {
      double s = accumulate ? static_cast<double>(C.at(i, j)) : 0.0, mag = std::abs(s);
      for (std::size_t k = 0; k < K; ++k) {
        const double p = static_cast<double>(A.at(i, k)) * static_cast<double>(B.at(k, j));
        s += p;
        mag += std::abs(p);
      }
      want[i * N + j] = s;
      bound[i * N + j] = static_cast<double>(K + 2) * (std::numeric_limits<T>::epsilon() / 2) * mag;  // (K + 2) u
    }
  loom::backend::cpu::gemm(C.view, A.view, B.view, accumulate);
  std::size_t bad = 0;
  for (std::size_t i = 0; i < M; ++i)
    for (std::size_t j = 0; j < N; ++j)
      if (!(std::abs(static_cast<double>(C.at(i, j)) - want[i * N + j]) <= bound[i * N + j])) ++bad;
  // Storage outside the view: mark the view's elements, compare the rest with what was there.
  std::vector<bool> inside(C.store.size(), false);
  for (std::size_t i = 0; i < M; ++i)
    for (std::size_t j = 0; j < N; ++j) inside[static_cast<std::size_t>(&C.at(i, j) - C.store.data())] = true;
  std::size_t touched = 0;
  for (std::size_t e = 0; e < C.store.size(); ++e)
    if (!inside[e] && C.store[e] != before[e]) ++touched;
  CAPTURE(M);
  CAPTURE(K);
  CAPTURE(N);
  CAPTURE(std::string(name(la)) + " x " + name(lb) + " -> " + name(lc));
  CAPTURE(accumulate);
  CHECK(bad == 0);
  CHECK(touched == 0);
}

struct Dims3 {
  std::size_t M, K, N;
};

// GEMV (M or N of 1), rank 1 (K of 1), empty depth, small products, and products above the size at
// which the rows split over threads (2 M N K >= 4e6, M >= 32).
const Dims3 shapes[] = {{1, 37, 29}, {23, 41, 1}, {19, 1, 27}, {7, 0, 9}, {13, 17, 11},
                        {64, 64, 64}, {96, 160, 144}, {70, 300, 100}};
const Layout operand_layouts[] = {Layout::row, Layout::col, Layout::padded_row, Layout::padded_col, Layout::strided};
const Layout result_layouts[] = {Layout::row, Layout::col, Layout::padded_row, Layout::padded_col};

template <class T>
void every_path(std::mt19937& rng) {
  for (const auto& d : shapes) {
    // Small shapes: every combination (the strided ones take the plain loop). Large ones: the four
    // operand orders into a row-major and a padded column-major C (the kernel's transposed call and
    // its direct one), enough to reach each path without the reference sums dominating the suite.
    const bool small = d.M * d.N * d.K <= 4096;
    for (const Layout la : operand_layouts)
      for (const Layout lb : operand_layouts)
        for (const Layout lc : result_layouts)
          for (const bool acc : {false, true}) {
            const bool plain = (la == Layout::row || la == Layout::col) && (lb == Layout::row || lb == Layout::col) &&
                               (lc == Layout::row || lc == Layout::padded_col);
            if (small || plain) check_product<T>(d.M, d.K, d.N, la, lb, lc, acc, rng);
          }
  }
}

}  // namespace

TEST_CASE("gemm: every path, float and double") {
  std::mt19937 rng(20);
#ifdef _OPENMP
  loom::testing::RestoreThreads restore;
  for (const int t : {1, 2, 3}) {
    CAPTURE(t);
    omp_set_num_threads(t);
    every_path<float>(rng);
    every_path<double>(rng);
  }
#else
  every_path<float>(rng);
  every_path<double>(rng);
#endif
}

#ifdef _OPENMP
TEST_CASE("gemm: called from the threads of a parallel region") {
  // Each of 4 threads multiplies its own operands (the pattern of conv's samples): every call runs on
  // the thread that made it — Eigen's kernel, or a BLAS that threads on OpenMP (which then runs the call
  // there), never one that would start threads of its own in each call — and gives the sum.
  loom::testing::RestoreThreads restore;
  omp_set_num_threads(4);
  constexpr int P = 4;
  std::vector<int> bad(P, -1);
#pragma omp parallel num_threads(P)
  {
    const int t = omp_get_thread_num();
    std::mt19937 rng(100 + static_cast<unsigned>(t));
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    const std::size_t M = 96, K = 160, N = 144;
    std::vector<float> a(M * K), b(K * N), c(M * N, 0.0f);
    for (auto& e : a) e = static_cast<float>(u(rng));
    for (auto& e : b) e = static_cast<float>(u(rng));
    View<float, 2> A{a.data(), {M, K}, {static_cast<std::ptrdiff_t>(K), 1}}, B{b.data(), {K, N}, {static_cast<std::ptrdiff_t>(N), 1}},
        C{c.data(), {M, N}, {static_cast<std::ptrdiff_t>(N), 1}};
    loom::backend::cpu::gemm(C, A, B, false);
    int n_bad = 0;
    for (std::size_t i = 0; i < M; ++i)
      for (std::size_t j = 0; j < N; ++j) {
        double s = 0, mag = 0;
        for (std::size_t k = 0; k < K; ++k) {
          const double p = double(a[i * K + k]) * double(b[k * N + j]);
          s += p;
          mag += std::abs(p);
        }
        if (!(std::abs(double(c[i * N + j]) - s) <= double(K + 2) * (std::numeric_limits<float>::epsilon() / 2) * mag)) ++n_bad;
      }
    bad[static_cast<std::size_t>(t)] = n_bad;
  }
  for (int t = 0; t < P; ++t) {
    CAPTURE(t);
    CHECK(bad[static_cast<std::size_t>(t)] == 0);
  }
}
#endif

#ifdef LOOM_TEST_BLAS_ON_OPENMP
TEST_CASE("gemm: the BLAS's threading is recognized") {
  // loom_gemm_blas_openmp_tests runs on OpenMP's OpenBLAS, loom_gemm_blas_pthread_tests on the pthreads one: the
  // route above depends on telling them apart.
  CHECK(loom::backend::cpu::detail_gemm::blas_on_openmp() == bool(LOOM_TEST_BLAS_ON_OPENMP));
}
#endif

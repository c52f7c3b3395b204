// loom/backend/cpu/gemm.hpp — C (+)= A * B on strided 2-D views through Eigen's GEMM kernel
// (general_matrix_matrix_product), with packing buffers loom owns: a grow-only per-thread workspace,
// so steady-state steps never allocate (Eigen's operator* mallocs its blocks above 128 KiB). Rows of C
// are split over OpenMP threads. Row- and column-major operands (any leading dimension) need no copy;
// other strides take a plain loop (correct, slow, never allocating).
#pragma once
#include <Eigen/Core>
#include <algorithm>

#include "../../core/tensor.hpp"
#include "../../expr/slots.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace loom::backend::cpu {

template <class T>
void gemm_loop(const detail::View<T, 2>& C, const detail::View<T, 2>& A, const detail::View<T, 2>& B, bool accumulate) {
  for (std::size_t i = 0; i < A.dims[0]; ++i)
    for (std::size_t j = 0; j < B.dims[1]; ++j) {
      T acc{0};
      for (std::size_t k = 0; k < A.dims[1]; ++k)
        acc += A.data[i * A.strides[0] + k * A.strides[1]] * B.data[k * B.strides[0] + j * B.strides[1]];
      T& c = C.data[i * C.strides[0] + j * C.strides[1]];
      c = accumulate ? c + acc : acc;
    }
}

template <class T>
detail::View<T, 2> transposed(const detail::View<T, 2>& v) {
  return {v.data, {v.dims[1], v.dims[0]}, {v.strides[1], v.strides[0]}};
}

namespace detail_gemm {

using Index = Eigen::Index;

/// Eigen's blocking with packing buffers taken from loom's workspace instead of the heap.
template <class T>
struct Blocking : Eigen::internal::level3_blocking<T, T> {
  Blocking(Index rows, Index cols, Index depth) {
    this->m_mc = rows;
    this->m_nc = cols;
    this->m_kc = depth;
    Eigen::internal::computeProductBlockingSizes<T, T, 1, Index>(this->m_kc, this->m_mc, this->m_nc, 1);
  }
  /// Rounded up so that block B, which follows block A in the workspace, stays 64-byte aligned.
  std::size_t size_a() const { return (static_cast<std::size_t>(this->m_mc * this->m_kc) * sizeof(T) + 63) / 64 * 64 / sizeof(T); }
  std::size_t size_b() const { return static_cast<std::size_t>(this->m_kc * this->m_nc); }
  void use(T* a, T* b) {
    this->m_blockA = a;
    this->m_blockB = b;
  }
};

/// Grow-only, per-thread packing memory (allocates only when a larger product first appears).
template <class T>
T* workspace(std::size_t n) {
  thread_local std::shared_ptr<T> buf;
  thread_local std::size_t cap = 0;
  if (n > cap) {
    buf = loom::detail::allocate_aligned<T>(n);
    cap = n;
  }
  return buf.get();
}

/// Layout of a 2-D view for Eigen: storage order and leading dimension, or order -1 if neither.
template <class T>
std::pair<int, Index> layout(const loom::detail::View<T, 2>& v) {
  const auto r = static_cast<Index>(v.dims[0]), c = static_cast<Index>(v.dims[1]);
  if (v.strides[1] == 1 || c == 1) return {Eigen::RowMajor, std::max<Index>(v.strides[0], c)};
  if (v.strides[0] == 1 || r == 1) return {Eigen::ColMajor, std::max<Index>(v.strides[1], r)};
  return {-1, 0};
}

/// C[M x N] (col-major, leading dimension ldc) += A * B on a row range, A/B in the given orders.
template <class T, int LO, int RO>
void run(Index M, Index N, Index K, const T* a, Index lda, const T* b, Index ldb, T* c, Index ldc) {
  Blocking<T> blocking(M, N, K);
  T* wa = workspace<T>(blocking.size_a() + blocking.size_b());
  blocking.use(wa, wa + blocking.size_a());
  Eigen::internal::general_matrix_matrix_product<Index, T, LO, false, T, RO, false, Eigen::ColMajor, 1>::run(
      M, N, K, a, lda, b, ldb, c, 1, ldc, T{1}, blocking, nullptr);
}

}  // namespace detail_gemm

/// C = A * B, or C += A * B when `accumulate`.
template <class T>
void gemm(const detail::View<T, 2>& C, const detail::View<T, 2>& A, const detail::View<T, 2>& B, bool accumulate) {
  using namespace detail_gemm;
  const std::size_t M = A.dims[0], K = A.dims[1], N = B.dims[1];
  if (M == 0 || N == 0) return;
  if (!accumulate)
    for (std::size_t i = 0; i < M; ++i)
      for (std::size_t j = 0; j < N; ++j) C.data[i * C.strides[0] + j * C.strides[1]] = T{0};
  if (K == 0) return;
  // Eigen's kernel writes a column-major C; a row-major C is the column-major C^T = B^T A^T.
  const bool c_col = C.strides[0] == 1 || M == 1, c_row = C.strides[1] == 1 || N == 1;
  if (!c_col && c_row) return gemm(transposed(C), transposed(B), transposed(A), true);
  auto [oa, lda] = layout(A);
  auto [ob, ldb] = layout(B);
  if (!c_col || oa < 0 || ob < 0) return gemm_loop(C, A, B, true);
  const Index ldc = std::max<Index>(C.strides[1], static_cast<Index>(M));
  auto rows = [&](Index m0, Index m1) {
    const T* a = A.data + m0 * A.strides[0];
    T* c = C.data + m0 * C.strides[0];
    const auto m = m1 - m0, n = static_cast<Index>(N), k = static_cast<Index>(K);
    if (oa == Eigen::RowMajor && ob == Eigen::RowMajor) run<T, Eigen::RowMajor, Eigen::RowMajor>(m, n, k, a, lda, B.data, ldb, c, ldc);
    else if (oa == Eigen::RowMajor) run<T, Eigen::RowMajor, Eigen::ColMajor>(m, n, k, a, lda, B.data, ldb, c, ldc);
    else if (ob == Eigen::RowMajor) run<T, Eigen::ColMajor, Eigen::RowMajor>(m, n, k, a, lda, B.data, ldb, c, ldc);
    else run<T, Eigen::ColMajor, Eigen::ColMajor>(m, n, k, a, lda, B.data, ldb, c, ldc);
  };
  const auto Mi = static_cast<Index>(M);
#ifdef _OPENMP
  const double flops = 2.0 * double(M) * double(N) * double(K);
  if (flops >= 4e6 && M >= 32 && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel
    {
      const Index t = omp_get_thread_num(), nt = omp_get_num_threads();
      const Index m0 = Mi * t / nt / 8 * 8, m1 = t + 1 == nt ? Mi : Mi * (t + 1) / nt / 8 * 8;  // 8-row aligned
      if (m1 > m0) rows(m0, m1);
    }
    return;
  }
#endif
  rows(0, Mi);
}

}  // namespace loom::backend::cpu

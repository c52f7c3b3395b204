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
#include "parallel.hpp"
#ifdef LOOM_USE_CBLAS
#include <cblas.h>
// OpenBLAS's report of how it threads a call (its extension: 0 not at all, 1 on threads of its own, 2 on
// OpenMP's); a weak reference, null when the BLAS is another.
extern "C" int openblas_get_parallel(void) __attribute__((weak));
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

/// Grow-only, per-thread memory, one buffer per Tag (GEMM packing; other kernels' per-thread scratch):
/// allocates only when a larger request first appears.
template <class T, class Tag = void>
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

/// y += M x as Eigen's GEMV for a product with one row or one column (no packing of the matrix: a
/// batch-1 linear layer would otherwise pack its whole weight matrix every call). False when the
/// matrix is neither row- nor column-major.
template <class T>
bool gemv(const loom::detail::View<T, 2>& C, const loom::detail::View<T, 2>& A, const loom::detail::View<T, 2>& B) {
  using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  using VecMap = Eigen::Map<Vec, 0, Eigen::InnerStride<>>;
  using CVecMap = Eigen::Map<const Vec, 0, Eigen::InnerStride<>>;
  const auto M = static_cast<Index>(A.dims[0]), K = static_cast<Index>(A.dims[1]), N = static_cast<Index>(B.dims[1]);
  // y (length R) += Mat (R x K, strides rs, cs) * x (length K, stride xs)
  auto run = [&](T* y, Index R, std::ptrdiff_t ys, const T* m, std::ptrdiff_t rs, std::ptrdiff_t cs, const T* x,
                 std::ptrdiff_t xs) {
    VecMap yv(y, R, Eigen::InnerStride<>(ys));
    CVecMap xv(x, K, Eigen::InnerStride<>(xs));
    if (cs == 1 || K == 1) {
      using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
      Eigen::Map<const Mat, 0, Eigen::OuterStride<>> mm(m, R, K, Eigen::OuterStride<>(std::max<std::ptrdiff_t>(rs, K)));
      yv.noalias() += mm * xv;
    } else if (rs == 1 || R == 1) {
      using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
      Eigen::Map<const Mat, 0, Eigen::OuterStride<>> mm(m, R, K, Eigen::OuterStride<>(std::max<std::ptrdiff_t>(cs, R)));
      yv.noalias() += mm * xv;
    } else {
      return false;
    }
    return true;
  };
  if (M == 1)  // C^T = B^T A^T
    return run(C.data, N, C.strides[1], B.data, B.strides[1], B.strides[0], A.data, A.strides[1]);
  return run(C.data, M, C.strides[0], A.data, A.strides[0], A.strides[1], B.data, B.strides[0]);
}

/// C = a b^T or C += a b^T for a product of depth 1 (a batch-1 weight gradient x^T g): one streaming pass
/// over C, row by row (or column by column), with no packing and no separate clearing pass. False when
/// neither C's rows nor its columns are contiguous together with the matching operand.
template <class T>
bool rank1(const loom::detail::View<T, 2>& C, const loom::detail::View<T, 2>& A, const loom::detail::View<T, 2>& B, bool accumulate) {
  using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  // C's line i (length L, contiguous) (+)= s_i * v, v contiguous of length L.
  auto lines = [&](T* c, std::ptrdiff_t cs, std::size_t n, std::size_t L, const T* s, std::ptrdiff_t ss, const T* v) {
    Eigen::Map<const Vec> vv(v, static_cast<Index>(L));
    for (std::size_t i = 0; i < n; ++i) {
      Eigen::Map<Vec> ci(c + static_cast<std::ptrdiff_t>(i) * cs, static_cast<Index>(L));
      const T si = s[static_cast<std::ptrdiff_t>(i) * ss];
      if (accumulate) ci += si * vv;
      else ci = si * vv;
    }
  };
  const std::size_t M = A.dims[0], N = B.dims[1];
  if ((C.strides[1] == 1 || N == 1) && (B.strides[1] == 1 || N == 1))  // rows: C[i, :] (+)= A[i, 0] B[0, :]
    lines(C.data, C.strides[0], M, N, A.data, A.strides[0], B.data);
  else if ((C.strides[0] == 1 || M == 1) && (A.strides[0] == 1 || M == 1))  // columns: C[:, j] (+)= B[0, j] A[:, 0]
    lines(C.data, C.strides[1], N, M, B.data, B.strides[1], A.data);
  else
    return false;
  return true;
}

#ifdef LOOM_USE_CBLAS
/// Whether the BLAS threads on OpenMP (OpenBLAS built with USE_OPENMP: Debian's libopenblas0-openmp). Such
/// a BLAS runs a call made inside a parallel region on the calling thread, so it can take the rows loom
/// splits over its threads; one with threads of its own (OpenBLAS's pthreads build) would start them in
/// every thread's call.
inline bool blas_on_openmp() {
  static const bool on = openblas_get_parallel != nullptr && openblas_get_parallel() == 2;
  return on;
}

/// C[M x N] (column-major, ldc) += A B on the BLAS, A and B in the given orders.
template <class T>
void blas(int oa, int ob, Index M, Index N, Index K, const T* a, Index lda, const T* b, Index ldb, T* c, Index ldc) {
  const auto ta = oa == Eigen::ColMajor ? CblasNoTrans : CblasTrans, tb = ob == Eigen::ColMajor ? CblasNoTrans : CblasTrans;
  const auto m = static_cast<int>(M), n = static_cast<int>(N), k = static_cast<int>(K);
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasColMajor, ta, tb, m, n, k, 1.0f, a, int(lda), b, int(ldb), 1.0f, c, int(ldc));
  else
    cblas_dgemm(CblasColMajor, ta, tb, m, n, k, 1.0, a, int(lda), b, int(ldb), 1.0, c, int(ldc));
}
#endif

}  // namespace detail_gemm

/// C = A * B, or C += A * B when `accumulate`.
template <class T>
void gemm(const detail::View<T, 2>& C, const detail::View<T, 2>& A, const detail::View<T, 2>& B, bool accumulate) {
  using namespace detail_gemm;
  const std::size_t M = A.dims[0], K = A.dims[1], N = B.dims[1];
  if (M == 0 || N == 0) return;
  if (K == 1 && rank1(C, A, B, accumulate)) return;
  if (!accumulate) {  // Eigen's kernel accumulates: clear C first, a contiguous run at a time
    const bool rows = C.strides[1] == 1, cols = !rows && C.strides[0] == 1;
    const std::size_t outer = cols ? N : M, inner = cols ? M : N;
    const std::ptrdiff_t os = cols ? C.strides[1] : C.strides[0], is = cols ? 1 : C.strides[1];
    if (is == 1 && os == static_cast<std::ptrdiff_t>(inner)) {  // one contiguous block: one fill, not one per run
      std::fill_n(C.data, outer * inner, T{0});
    } else {
      for (std::size_t i = 0; i < outer; ++i) {
        T* r = C.data + static_cast<std::ptrdiff_t>(i) * os;
        if (is == 1) std::fill_n(r, inner, T{0});
        else
          for (std::size_t j = 0; j < inner; ++j) r[static_cast<std::ptrdiff_t>(j) * is] = T{0};
      }
    }
  }
  if (K == 0) return;
  if ((M == 1 || N == 1) && gemv(C, A, B)) return;
  // Eigen's kernel writes a column-major C; a row-major C is the column-major C^T = B^T A^T.
  const bool c_col = C.strides[0] == 1 || M == 1, c_row = C.strides[1] == 1 || N == 1;
  if (!c_col && c_row) return gemm(transposed(C), transposed(B), transposed(A), true);
  auto [oa, lda] = layout(A);
  auto [ob, ldb] = layout(B);
  if (!c_col || oa < 0 || ob < 0) return gemm_loop(C, A, B, true);
  const Index ldc = std::max<Index>(C.strides[1], static_cast<Index>(M));
  const auto Mi = static_cast<Index>(M);
  // Which products a BLAS takes depends on how it threads; it must never thread one itself while loom's
  // OpenMP threads spin for the next region (the cores oversubscribed), nor allocate per call as
  // OpenBLAS's threaded calls do (measured, docs/performance.md: the MLP step at batch 512 on 2 threads
  // took 8.5 ms, 3 heap allocations a step, with its three 2^20-multiply-add products threaded by
  // OpenBLAS's pthreads; 4.0 ms, none, on Eigen's kernel). A BLAS on OpenMP (blas_on_openmp()) runs a
  // call made inside a parallel region on the calling thread: it takes every product, loom splitting
  // the rows of any it would thread (above 2^18 multiply-adds, OpenBLAS's bound) over its own team. A
  // BLAS with threads of its own takes the products that run on one thread where it will not start
  // them: all when loom has one thread, below 2^18 multiply-adds otherwise, never from inside a
  // parallel region (conv's samples, attention's heads: it would start its threads in each call); the
  // rest stay on Eigen's kernel, split over loom's threads when large.
  const double mnk = double(M) * double(N) * double(K);
#ifdef LOOM_USE_CBLAS
  constexpr bool blas_type = std::is_same_v<T, float> || std::is_same_v<T, double>;
  const bool omp_blas = blas_type && blas_on_openmp();
  const bool blas = omp_blas || (blas_type && !in_parallel() && (free_threads() == 1 || mnk <= double(1 << 18)));
#else
  constexpr bool omp_blas = false;
#endif
  const bool split = free_threads() > 1 && (omp_blas ? mnk > double(1 << 18) : 2.0 * mnk >= 4e6 && M >= 32);
  // (init-captures: clang before 16 cannot capture structured bindings)
  auto rows = [&, oa = oa, ob = ob, lda = lda, ldb = ldb](Index m0, Index m1) {
    const T* a = A.data + m0 * A.strides[0];
    T* c = C.data + m0 * C.strides[0];
    const auto m = m1 - m0, n = static_cast<Index>(N), k = static_cast<Index>(K);
#ifdef LOOM_USE_CBLAS
    if constexpr (blas_type)
      if (blas) return detail_gemm::blas<T>(oa, ob, m, n, k, a, lda, B.data, ldb, c, ldc);
#endif
    if (oa == Eigen::RowMajor && ob == Eigen::RowMajor) run<T, Eigen::RowMajor, Eigen::RowMajor>(m, n, k, a, lda, B.data, ldb, c, ldc);
    else if (oa == Eigen::RowMajor) run<T, Eigen::RowMajor, Eigen::ColMajor>(m, n, k, a, lda, B.data, ldb, c, ldc);
    else if (ob == Eigen::RowMajor) run<T, Eigen::ColMajor, Eigen::RowMajor>(m, n, k, a, lda, B.data, ldb, c, ldc);
    else run<T, Eigen::ColMajor, Eigen::ColMajor>(m, n, k, a, lda, B.data, ldb, c, ldc);
  };
#ifdef _OPENMP
  if (split) {
#pragma omp parallel
    {
      const Index t = omp_get_thread_num(), nt = omp_get_num_threads();
      const Index m0 = Mi * t / nt / 8 * 8, m1 = t + 1 == nt ? Mi : Mi * (t + 1) / nt / 8 * 8;  // 8-row aligned
      if (m1 > m0) rows(m0, m1);
    }
    return;
  }
#else
  (void)split;
#endif
  rows(0, Mi);
}

}  // namespace loom::backend::cpu

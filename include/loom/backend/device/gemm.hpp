// loom/backend/device/gemm.hpp — C (+)= A B on strided 2-D device views. On CUDA: cuBLAS (one handle
// per thread, on the current stream) for operands with a unit stride in either axis (a column-major C as
// the product C^T = B^T A^T), a plain kernel otherwise; batched products with uniform batch strides are
// one cublas<T>gemmStridedBatched call. On the host device systems (OMP/CPP, how CI runs the device
// path): the same plain kernel.
#pragma once
#include "../exec.hpp"
#include "fused.hpp"

namespace loom::device {
/// Whether float products on CUDA (matmul, and the convolutions' GEMMs) may use TF32 tensor cores:
/// operands rounded to 10-bit mantissas, accumulation in float (cuBLAS's CUBLAS_TF32_TENSOR_OP_MATH; PyTorch's
/// torch.backends.cuda.matmul.allow_tf32). Default false: full float products. No effect elsewhere.
inline bool& tf32() {
  static bool on = false;
  return on;
}
}  // namespace loom::device

namespace loom::backend::device {

/// C[i, j] (+)= sum_k A[i, k] B[k, j], one output element per thread (any strides).
template <class T>
struct GemmKernel {
  T* c;
  const T *a, *b;
  std::size_t n, k;
  std::ptrdiff_t cs0, cs1, as0, as1, bs0, bs1;
  std::ptrdiff_t bc, ba, bb;  // batch strides (batch = element index / (m n))
  std::size_t mn;
  bool accumulate;
  LOOM_HOST_DEVICE void operator()(std::size_t e) const {
    const std::size_t batch = e / mn, r = e % mn, i = r / n, j = r % n;
    const T* ap = a + static_cast<std::ptrdiff_t>(batch) * ba + static_cast<std::ptrdiff_t>(i) * as0;
    const T* bp = b + static_cast<std::ptrdiff_t>(batch) * bb + static_cast<std::ptrdiff_t>(j) * bs1;
    T acc{0};
    for (std::size_t q = 0; q < k; ++q) acc += ap[static_cast<std::ptrdiff_t>(q) * as1] * bp[static_cast<std::ptrdiff_t>(q) * bs0];
    T& out = c[static_cast<std::ptrdiff_t>(batch) * bc + static_cast<std::ptrdiff_t>(i) * cs0 + static_cast<std::ptrdiff_t>(j) * cs1];
    out = accumulate ? out + acc : acc;
  }
};

/// `batches` products C_b (+)= A_b B_b with C_b = C + b * bc (likewise A, B); bc must not be 0 when
/// batches > 1 (outputs of one call are distinct).
template <class T>
void gemm_kernel(const loom::detail::View<T, 2>& C, const loom::detail::View<T, 2>& A, const loom::detail::View<T, 2>& B,
                 bool accumulate, std::size_t batches = 1, std::ptrdiff_t bc = 0, std::ptrdiff_t ba = 0, std::ptrdiff_t bb = 0) {
  const std::size_t m = C.dims[0], n = C.dims[1], mn = m * n;
  if (mn == 0 || batches == 0) return;
  GemmKernel<T> g{C.data,        A.data,        B.data,        n,  A.dims[1], C.strides[0], C.strides[1],
                  A.strides[0],  A.strides[1],  B.strides[0],  B.strides[1], bc, ba, bb, mn, accumulate};
  launch(batches * mn, g);
}

#if defined(LOOM_CUDA)
namespace detail {
inline cublasHandle_t cublas() {
  static thread_local cublasHandle_t h = [] {
    cublasHandle_t x{};
    LOOM_CUDA_CHECK(cublasCreate(&x));
    return x;
  }();
  LOOM_CUDA_CHECK(cublasSetStream(h, loom::device::current_stream()));
  LOOM_CUDA_CHECK(cublasSetMathMode(h, loom::device::tf32() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  return h;
}
/// A 2-D operand as cuBLAS sees it (column-major): a row-major [r, c] with leading dimension ld is a
/// column-major [c, r]; a column-major one is itself. Neither: not expressible (nullopt-like: ok false).
struct Operand {
  bool ok = false, trans = false;
  int ld = 0;
};
template <class T>
Operand as_cublas(const loom::detail::View<T, 2>& v) {
  const auto r = v.dims[0], c = v.dims[1];
  if (v.strides[1] == 1 && (r <= 1 || v.strides[0] >= static_cast<std::ptrdiff_t>(std::max<std::size_t>(c, 1))))
    return {true, false, static_cast<int>(r <= 1 ? std::max<std::size_t>(c, 1) : v.strides[0])};
  if (v.strides[0] == 1 && (c <= 1 || v.strides[1] >= static_cast<std::ptrdiff_t>(std::max<std::size_t>(r, 1))))
    return {true, true, static_cast<int>(c <= 1 ? std::max<std::size_t>(r, 1) : v.strides[1])};
  return {};
}
}  // namespace detail
#endif

/// C (+)= A B for one or `batches` uniformly strided products.
template <class T>
void gemm_batched(const loom::detail::View<T, 2>& C, const loom::detail::View<T, 2>& A, const loom::detail::View<T, 2>& B,
                  bool accumulate, std::size_t batches, std::ptrdiff_t bc, std::ptrdiff_t ba, std::ptrdiff_t bb) {
  const std::size_t m = C.dims[0], n = C.dims[1];
  [[maybe_unused]] const std::size_t k = A.dims[1];  // (cuBLAS only)
  if (m == 0 || n == 0 || batches == 0) return;
#if defined(LOOM_CUDA)
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    // Row-major C = A B is column-major C^T = B^T A^T: cuBLAS computes C^T with "A" := B, "B" := A.
    const auto oc = detail::as_cublas(C), oa = detail::as_cublas(A), ob = detail::as_cublas(B);
    if (oc.ok && oc.trans && oa.ok && ob.ok) {  // a column-major C (a transposed weight's gradient): C^T = B^T A^T
      auto t = [](loom::detail::View<T, 2> v) {
        std::swap(v.dims[0], v.dims[1]);
        std::swap(v.strides[0], v.strides[1]);
        return v;
      };
      gemm_batched(t(C), t(B), t(A), accumulate, batches, bc, bb, ba);
      return;
    }
    if (oc.ok && !oc.trans && oa.ok && ob.ok) {
      if (k == 0) {
        if (!accumulate) gemm_kernel(C, A, B, false, batches, bc, ba, bb);
        return;
      }
      const T alpha = 1, beta = accumulate ? 1 : 0;
      const auto opb = ob.trans ? CUBLAS_OP_T : CUBLAS_OP_N, opa = oa.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
      const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
      auto h = detail::cublas();
      if constexpr (std::is_same_v<T, float>) {
        if (batches == 1)
          LOOM_CUDA_CHECK(cublasSgemm(h, opb, opa, M, N, K, &alpha, B.data, ob.ld, A.data, oa.ld, &beta, C.data, oc.ld));
        else
          LOOM_CUDA_CHECK(cublasSgemmStridedBatched(h, opb, opa, M, N, K, &alpha, B.data, ob.ld, bb, A.data, oa.ld, ba,
                                                    &beta, C.data, oc.ld, bc, static_cast<int>(batches)));
      } else {
        if (batches == 1)
          LOOM_CUDA_CHECK(cublasDgemm(h, opb, opa, M, N, K, &alpha, B.data, ob.ld, A.data, oa.ld, &beta, C.data, oc.ld));
        else
          LOOM_CUDA_CHECK(cublasDgemmStridedBatched(h, opb, opa, M, N, K, &alpha, B.data, ob.ld, bb, A.data, oa.ld, ba,
                                                    &beta, C.data, oc.ld, bc, static_cast<int>(batches)));
      }
      return;
    }
  }
#endif
  gemm_kernel(C, A, B, accumulate, batches, bc, ba, bb);
}

template <class T>
void gemm(const loom::detail::View<T, 2>& C, const loom::detail::View<T, 2>& A, const loom::detail::View<T, 2>& B,
          bool accumulate) {
  gemm_batched(C, A, B, accumulate, 1, 0, 0, 0);
}

}  // namespace loom::backend::device

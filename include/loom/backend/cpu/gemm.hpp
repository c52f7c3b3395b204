// loom/backend/cpu/gemm.hpp — C (+)= A * B on strided 2-D views through Eigen's GEMM. Row- and
// column-major layouts (any leading dimension) go to Eigen without copies; other strides take a plain
// loop (correct, slow, never allocating).
#pragma once
#include <Eigen/Core>

#include "../../expr/slots.hpp"

namespace loom::backend::cpu {

template <class T, int Order>
using MatMap = Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Order>, 0, Eigen::OuterStride<>>;

/// Calls f with an Eigen map of v, or returns false when v is neither row- nor column-major.
template <class T, class F>
bool with_map(const detail::View<T, 2>& v, F&& f) {
  const auto r = static_cast<Eigen::Index>(v.dims[0]), c = static_cast<Eigen::Index>(v.dims[1]);
  if (v.strides[1] == 1 || c == 1) {
    f(MatMap<T, Eigen::RowMajor>(v.data, r, c, Eigen::OuterStride<>(std::max<std::ptrdiff_t>(v.strides[0], c))));
    return true;
  }
  if (v.strides[0] == 1 || r == 1) {
    f(MatMap<T, Eigen::ColMajor>(v.data, r, c, Eigen::OuterStride<>(std::max<std::ptrdiff_t>(v.strides[1], r))));
    return true;
  }
  return false;
}

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

/// C = A * B, or C += A * B when `accumulate`.
template <class T>
void gemm(const detail::View<T, 2>& C, const detail::View<T, 2>& A, const detail::View<T, 2>& B, bool accumulate) {
  const std::size_t M = A.dims[0], K = A.dims[1], N = B.dims[1];
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate)
      for (std::size_t i = 0; i < M; ++i)
        for (std::size_t j = 0; j < N; ++j) C.data[i * C.strides[0] + j * C.strides[1]] = T{0};
    return;
  }
  if (C.strides[1] != 1 && N != 1 && (C.strides[0] == 1 || M == 1))
    return gemm(transposed(C), transposed(B), transposed(A), accumulate);  // C^T = B^T A^T, row-major
  bool done = false;
  if (C.strides[1] == 1 || N == 1)
    with_map(A, [&](const auto& a) {
      done = with_map(B, [&](const auto& b) {
        MatMap<T, Eigen::RowMajor> c(C.data, static_cast<Eigen::Index>(M), static_cast<Eigen::Index>(N),
                                     Eigen::OuterStride<>(std::max<std::ptrdiff_t>(C.strides[0], static_cast<std::ptrdiff_t>(N))));
        if (accumulate) c.noalias() += a * b;
        else c.noalias() = a * b;
      });
    });
  if (!done) gemm_loop(C, A, B, accumulate);
}

}  // namespace loom::backend::cpu

// loom/ops/matmul.hpp — batched, broadcasting matrix product: [..., M, K] @ [..., K, N] -> [..., M, N].
//   dA = g @ B^T (summed over batch axes A was broadcast along),  dB = A^T @ g (likewise)
#pragma once
#include "../backend/cpu/gemm.hpp"
#include "op.hpp"

namespace loom {

namespace detail {
template <bool Ok, class Lhs, class Rhs>
struct check_matmul_inner {
  static_assert(Ok, "loom::matmul: inner dimensions differ (lhs [..., M, K] and rhs [..., K, N] are the Shape<...> "
                    "arguments of check_matmul_inner below)");
  static constexpr bool value = Ok;
};
template <bool Ok, class Lhs, class Rhs>
struct check_matmul_rank {
  static_assert(Ok, "loom::matmul: both operands need rank >= 2 (see check_matmul_rank below)");
  static constexpr bool value = Ok;
};

template <class S, std::size_t Drop>
struct batch_extents {
  static constexpr auto value = [] {
    std::array<std::size_t, S::rank - Drop> r{};
    for (std::size_t i = 0; i < r.size(); ++i) r[i] = S::extents[i];
    return r;
  }();
};
template <class S, std::size_t Drop>
using batch_shape = shape_from_array<batch_extents<S, Drop>>;

template <class BA, class BB, std::size_t M, std::size_t N>
struct matmul_extents {
  using B = broadcast_t<BA, BB>;
  static constexpr auto value = [] {
    std::array<std::size_t, B::rank + 2> r{};
    for (std::size_t i = 0; i < B::rank; ++i) r[i] = B::extents[i];
    r[B::rank] = M;
    r[B::rank + 1] = N;
    return r;
  }();
};
}  // namespace detail

namespace ops {

struct MatMul {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = true;
  static constexpr std::string_view name = "matmul";

  template <class A, class B>
  using shape = detail::shape_from_array<detail::matmul_extents<detail::batch_shape<A, 2>, detail::batch_shape<B, 2>,
                                                                A::extents[A::rank - 2], B::extents[B::rank - 1]>>;

  template <std::size_t RA, std::size_t RB>
  auto dims(const Dims<RA>& a, const Dims<RB>& b) const {
    if (a[RA - 1] != b[RB - 2])
      throw shape_error("loom::matmul: inner dimensions differ: lhs is " + to_string(a) + ", rhs is " + to_string(b));
    Dims<RA - 2> ba{};
    Dims<RB - 2> bb{};
    for (std::size_t i = 0; i + 2 < RA; ++i) ba[i] = a[i];
    for (std::size_t i = 0; i + 2 < RB; ++i) bb[i] = b[i];
    const auto bo = broadcast_dims(ba, bb, "loom::matmul (batch axes)");
    constexpr std::size_t R = (RA > RB ? RA : RB);
    Dims<R> r{};
    for (std::size_t i = 0; i + 2 < R; ++i) r[i] = bo[i];
    r[R - 2] = a[RA - 2];
    r[R - 1] = b[RB - 1];
    return r;
  }

  /// Calls f(out_2d, a_2d, b_2d) for every batch index of the output.
  template <class T, std::size_t R, std::size_t RA, std::size_t RB, class F>
  static void for_batches(const detail::View<T, R>& out, const detail::View<T, RA>& a, const detail::View<T, RB>& b, F&& f) {
    constexpr std::size_t RBt = R - 2;
    Dims<RBt> bd{};
    for (std::size_t i = 0; i < RBt; ++i) bd[i] = out.dims[i];
    auto batch_strides = [&](const auto& v) {
      constexpr std::size_t RV = std::tuple_size_v<std::remove_cvref_t<decltype(v.dims)>>;
      Dims<RV - 2> d{};
      Strides<RV - 2> s{};
      for (std::size_t i = 0; i + 2 < RV; ++i) d[i] = v.dims[i], s[i] = v.strides[i];
      return broadcast_strides(d, s, bd);
    };
    const auto sa = batch_strides(a), sb = batch_strides(b), so = batch_strides(out);
    auto mat = [](const auto& v, std::ptrdiff_t off) {
      constexpr std::size_t RV = std::tuple_size_v<std::remove_cvref_t<decltype(v.dims)>>;
      return detail::View<T, 2>{v.data + off, {v.dims[RV - 2], v.dims[RV - 1]}, {v.strides[RV - 2], v.strides[RV - 1]}};
    };
    Dims<RBt> idx{};
    const std::size_t nb = numel(bd);
    for (std::size_t n = 0; n < nb; ++n) {
      std::ptrdiff_t oa = 0, ob = 0, oo = 0;
      for (std::size_t k = 0; k < RBt; ++k) {
        oa += static_cast<std::ptrdiff_t>(idx[k]) * sa[k];
        ob += static_cast<std::ptrdiff_t>(idx[k]) * sb[k];
        oo += static_cast<std::ptrdiff_t>(idx[k]) * so[k];
      }
      f(mat(out, oo), mat(a, oa), mat(b, ob));
      for (std::size_t k = RBt; k-- > 0;) {
        if (++idx[k] < bd[k]) break;
        idx[k] = 0;
      }
    }
  }

  template <class T, std::size_t R, std::size_t RA, std::size_t RB>
  void forward(const detail::View<T, R>& out, const detail::View<T, RA>& a, const detail::View<T, RB>& b) const {
    for_batches(out, a, b, [](const auto& o, const auto& x, const auto& y) { backend::cpu::gemm(o, x, y, false); });
  }
  template <class T, std::size_t R, std::size_t RA, std::size_t RB>
  void backward(const detail::View<T, R>& g, const detail::View<T, R>&,
                const std::pair<detail::View<T, RA>, detail::View<T, RA>>& a,
                const std::pair<detail::View<T, RB>, detail::View<T, RB>>& b) const {
    using backend::cpu::transposed;
    if (a.second.data)  // dA += g @ B^T, batch by batch (broadcast batches accumulate)
      for_batches(g, a.second, b.first, [](const auto& gg, const auto& da, const auto& y) {
        backend::cpu::gemm(da, gg, transposed(y), true);
      });
    if (b.second.data)  // dB += A^T @ g
      for_batches(g, a.first, b.second, [](const auto& gg, const auto& x, const auto& db) {
        backend::cpu::gemm(db, transposed(x), gg, true);
      });
  }
};

}  // namespace ops

/// Matrix product with batch broadcasting (both operands rank >= 2).
template <Expression A, Expression B>
auto matmul(const A& a, const B& b) {
  using SA = shape_t<A>;
  using SB = shape_t<B>;
  constexpr bool rank_ok = SA::rank >= 2 && SB::rank >= 2;
  detail::check_matmul_rank<rank_ok, SA, SB>{};
  if constexpr (rank_ok) {
    constexpr std::size_t k1 = SA::extents[SA::rank - 1], k2 = SB::extents[SB::rank - 2];
    constexpr bool inner_ok = k1 == k2 || k1 == dyn || k2 == dyn;
    detail::check_matmul_inner<inner_ok, SA, SB>{};
    using BA = detail::batch_shape<SA, 2>;
    using BB = detail::batch_shape<SB, 2>;
    detail::check_broadcast<broadcastable_v<BA, BB>, BA, BB>{};
    if constexpr (inner_ok && broadcastable_v<BA, BB>) return make_node(ops::MatMul{}, a, b);
  }
}

}  // namespace loom

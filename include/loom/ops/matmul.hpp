// loom/ops/matmul.hpp — batched, broadcasting matrix product: [..., M, K] @ [..., K, N] -> [..., M, N].
//   dA = g @ B^T (summed over batch axes A was broadcast along),  dB = A^T @ g (likewise)
#pragma once
#include "../backend/cpu/gemm.hpp"
#include "../backend/exec.hpp"
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

  /// The batch extents of `ref` (the widest operand) and the strides of c, a, b over them (0 along the
  /// axes they are broadcast along).
  template <std::size_t RBt>
  struct Batches {
    Dims<RBt> bd{};
    Strides<RBt> sa{}, sb{}, so{};
  };
  template <class T, std::size_t RR, std::size_t R, std::size_t RA, std::size_t RB>
  static Batches<RR - 2> batches(const detail::View<T, RR>& ref, const detail::View<T, R>& out,
                                 const detail::View<T, RA>& a, const detail::View<T, RB>& b) {
    Batches<RR - 2> r;
    for (std::size_t i = 0; i + 2 < RR; ++i) r.bd[i] = ref.dims[i];
    auto batch_strides = [&](const auto& v) {
      constexpr std::size_t RV = std::tuple_size_v<std::remove_cvref_t<decltype(v.dims)>>;
      Dims<RV - 2> d{};
      Strides<RV - 2> s{};
      for (std::size_t i = 0; i + 2 < RV; ++i) d[i] = v.dims[i], s[i] = v.strides[i];
      return broadcast_strides(d, s, r.bd);
    };
    r.sa = batch_strides(a), r.sb = batch_strides(b), r.so = batch_strides(out);
    return r;
  }
  /// Calls f(offset of out, of a, of b) for every batch index.
  template <std::size_t RBt, class F>
  static void each_batch(const Batches<RBt>& bt, F&& f) {
    Dims<RBt> idx{};
    const std::size_t nb = numel(bt.bd);
    for (std::size_t n = 0; n < nb; ++n) {
      std::ptrdiff_t oa = 0, ob = 0, oo = 0;
      for (std::size_t k = 0; k < RBt; ++k) {
        oa += static_cast<std::ptrdiff_t>(idx[k]) * bt.sa[k];
        ob += static_cast<std::ptrdiff_t>(idx[k]) * bt.sb[k];
        oo += static_cast<std::ptrdiff_t>(idx[k]) * bt.so[k];
      }
      f(oo, oa, ob);
      for (std::size_t k = RBt; k-- > 0;) {
        if (++idx[k] < bt.bd[k]) break;
        idx[k] = 0;
      }
    }
  }
  template <class T, std::size_t RV>
  static detail::View<T, 2> mat(const detail::View<T, RV>& v, std::ptrdiff_t off) {
    return {v.data + off, {v.dims[RV - 2], v.dims[RV - 1]}, {v.strides[RV - 2], v.strides[RV - 1]}};
  }
  /// Calls f(out_2d, a_2d, b_2d) for every batch index of the output.
  template <class T, std::size_t R, std::size_t RA, std::size_t RB, class F>
  static void for_batches(const detail::View<T, R>& out, const detail::View<T, RA>& a, const detail::View<T, RB>& b, F&& f) {
    each_batch(batches(out, out, a, b), [&](std::ptrdiff_t oo, std::ptrdiff_t oa, std::ptrdiff_t ob) {
      f(mat(out, oo), mat(a, oa), mat(b, ob));
    });
  }

  // ---- device: cuBLAS; all batches in one strided-batched call when the batch axes merge -------------
  /// One stride per operand for all batch axes together, when each operand's batch axes are one run.
  template <std::size_t RBt>
  static bool merged(const Batches<RBt>& bt, std::ptrdiff_t& ba, std::ptrdiff_t& bb, std::ptrdiff_t& bo) {
    auto one = [&](const Strides<RBt>& s, std::ptrdiff_t& out) {
      std::ptrdiff_t next = -1;  // stride the next outer non-unit axis must have
      out = 0;
      for (std::size_t k = RBt; k-- > 0;) {
        if (bt.bd[k] == 1) continue;
        if (next < 0) out = s[k];
        else if (s[k] != next) return false;
        next = s[k] * static_cast<std::ptrdiff_t>(bt.bd[k]);
      }
      return true;
    };
    return one(bt.sa, ba) && one(bt.sb, bb) && one(bt.so, bo);
  }
  /// c (+)= a b batch by batch over ref's batch axes.
  template <class T, std::size_t RR, std::size_t R, std::size_t RA, std::size_t RB>
  static void device_gemm(const detail::View<T, RR>& ref, const detail::View<T, R>& c, const detail::View<T, RA>& a,
                          const detail::View<T, RB>& b, bool accumulate) {
    const auto bt = batches(ref, c, a, b);
    std::ptrdiff_t ba = 0, bb = 0, bo = 0;
    const std::size_t nb = numel(bt.bd);
    if (nb == 1 || (merged(bt, ba, bb, bo) && bo != 0)) {
      backend::device::gemm_batched(mat(c, 0), mat(a, 0), mat(b, 0), accumulate, nb, bo, ba, bb);
    } else {  // batches that accumulate into one output (a broadcast operand's gradient) run in turn
      each_batch(bt, [&](std::ptrdiff_t oo, std::ptrdiff_t oa, std::ptrdiff_t ob) {
        backend::device::gemm(mat(c, oo), mat(a, oa), mat(b, ob), accumulate);
      });
    }
  }
  template <class T, std::size_t R, std::size_t RA, std::size_t RB>
  void forward(on<cuda>, const detail::View<T, R>& out, const detail::View<T, RA>& a, const detail::View<T, RB>& b) const {
    device_gemm(out, out, a, b, false);
  }
  template <class T, std::size_t R, std::size_t RA, std::size_t RB>
  void backward(on<cuda>, const detail::View<T, R>& g, const detail::View<T, R>&,
                const std::pair<detail::View<T, RA>, detail::View<T, RA>>& a,
                const std::pair<detail::View<T, RB>, detail::View<T, RB>>& b) const {
    if (a.second.data) device_gemm(g, a.second, g, transposed_batch(b.first), true);  // dA += g B^T
    if (b.second.data) device_gemm(g, b.second, transposed_batch(a.first), g, true);  // dB += A^T g
  }
  template <class T, std::size_t RV>
  static detail::View<T, RV> transposed_batch(detail::View<T, RV> v) {
    std::swap(v.dims[RV - 2], v.dims[RV - 1]);
    std::swap(v.strides[RV - 2], v.strides[RV - 1]);
    return v;
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

// loom/ops/index.hpp — embedding-style gather of table rows by integer indices, whose gradient is a
// scatter-add into the table (no one-hot matmul):
//   out[i..., :] = W[idx[i...], :]          dW[idx[i...], :] += g[i..., :]
#pragma once
#include <stdexcept>

#include "../backend/exec.hpp"
#include "op.hpp"

namespace loom {

namespace detail {
template <class SI, std::size_t D>
struct gather_rows_extents {
  static constexpr auto value = [] {
    std::array<std::size_t, SI::rank + 1> e{};
    for (std::size_t i = 0; i < SI::rank; ++i) e[i] = SI::extents[i];
    e[SI::rank] = D;
    return e;
  }();
};
template <bool Ok, class Table, class Index>
struct check_embedding {
  static_assert(Ok, "loom::embedding: needs a float table [V, D] and an integer index tensor (see check_embedding "
                    "below)");
  static constexpr bool value = Ok;
};
/// Calls f(k, offset) for each element of a strided view, k counting in row-major order.
template <class T, std::size_t R, class F>
void for_each_offset(const View<T, R>& v, F&& f) {
  std::size_t k = 0;
  for_each_offset(v.dims, v.strides, [&](std::ptrdiff_t off) { f(k++, off); });
}
}  // namespace detail

namespace ops {

struct Embedding {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = true;
  static constexpr std::string_view name = "embedding";
  template <class W, class I>
  using value_type = value_t<W>;
  template <class W, class I>
  using shape = detail::shape_from_array<detail::gather_rows_extents<I, W::extents[1]>>;

  template <std::size_t R>
  Dims<R + 1> dims(const Dims<2>& w, const Dims<R>& idx) const {
    Dims<R + 1> d{};
    for (std::size_t i = 0; i < R; ++i) d[i] = idx[i];
    d[R] = w[1];
    return d;
  }
  template <class L>
  static std::size_t row(L i, std::size_t V) {
    if (i < 0 || static_cast<std::size_t>(i) >= V)
      throw std::out_of_range("loom::embedding: index " + std::to_string(i) + " outside [0, " + std::to_string(V) + ")");
    return static_cast<std::size_t>(i);
  }
  // ---- device: a thread per output element; the backward scatter-adds with atomics ------------------
  template <class T, class L, std::size_t R>
  struct Rows {  // element e = k D + d of the output: row idx[k] of the table, column d
    const L* idx;
    std::size_t dims[R];
    std::ptrdiff_t st[R];
    std::size_t D;
    LOOM_HOST_DEVICE std::ptrdiff_t index_offset(std::size_t k) const {
      std::ptrdiff_t off = 0;
      for (std::size_t a = R; a-- > 0;) {
        off += static_cast<std::ptrdiff_t>(k % dims[a]) * st[a];
        k /= dims[a];
      }
      return off;
    }
    LOOM_HOST_DEVICE std::size_t row(std::size_t e) const { return static_cast<std::size_t>(idx[index_offset(e / D)]); }
  };
  template <class T, class L, std::size_t R>
  struct OutOfRange {
    Rows<T, L, R> r;  // (with D = 1: one term per index)
    std::size_t V;
    LOOM_HOST_DEVICE std::size_t operator()(std::size_t k) const {
      const L i = r.idx[r.index_offset(k)];
      return i < 0 || static_cast<std::size_t>(i) >= V ? 1 : 0;
    }
  };
  template <class T, class L, std::size_t R>
  struct Gather {
    Rows<T, L, R> r;
    const T* w;
    std::ptrdiff_t w0, w1;
    T* out;
    LOOM_HOST_DEVICE void operator()(std::size_t e) const {
      out[e] = w[static_cast<std::ptrdiff_t>(r.row(e)) * w0 + static_cast<std::ptrdiff_t>(e % r.D) * w1];
    }
  };
  template <class T, class L, std::size_t R, std::size_t RO>
  struct Scatter {
    Rows<T, L, R> r;
    const T* g;
    std::size_t gdims[RO];
    std::ptrdiff_t gst[RO];
    T* dw;
    std::ptrdiff_t w0, w1;
    LOOM_HOST_DEVICE void operator()(std::size_t e) const {
      std::ptrdiff_t off = 0;
      std::size_t k = e;
      for (std::size_t a = RO; a-- > 0;) {
        off += static_cast<std::ptrdiff_t>(k % gdims[a]) * gst[a];
        k /= gdims[a];
      }
      backend::device::atomic_add(dw + static_cast<std::ptrdiff_t>(r.row(e)) * w0 + static_cast<std::ptrdiff_t>(e % r.D) * w1, g[off]);
    }
  };
  template <class T, class L, std::size_t R>
  static Rows<T, L, R> rows(const detail::View<L, R>& idx, std::size_t D) {
    Rows<T, L, R> r{idx.data, {}, {}, D};
    for (std::size_t a = 0; a < R; ++a) r.dims[a] = idx.dims[a], r.st[a] = idx.strides[a];
    return r;
  }
  template <class Dev, class T, class L, std::size_t R, std::size_t RO>
    requires(!HostDevice<Dev>)
  void forward(on<Dev>, const detail::View<T, RO>& out, const detail::View<T, 2>& w, const detail::View<L, R>& idx) const {
    const std::size_t V = w.dims[0], D = w.dims[1], n = idx.size();
    if (backend::device::sum_n<std::size_t>(n, OutOfRange<T, L, R>{rows<T>(idx, 1), V}) != 0) {
      const auto r = rows<T>(idx, 1);  // a bad index: find it and report it as the host does
      for (std::size_t k = 0; k < n; ++k) {
        L i{};
        detail::DeviceMemory<Dev>::to_host(&i, idx.data + r.index_offset(k), 1);
        row(i, V);
      }
    }
    backend::device::for_n(n * D, Gather<T, L, R>{rows<T>(idx, D), w.data, w.strides[0], w.strides[1], out.data});
  }
  template <class Dev, class T, class L, std::size_t R, std::size_t RO>
    requires(!HostDevice<Dev>)
  void backward(on<Dev>, const detail::View<T, RO>& g, const detail::View<T, RO>&,
                const std::pair<detail::View<T, 2>, detail::View<T, 2>>& w,
                const std::pair<detail::View<L, R>, detail::View<L, R>>& idx) const {
    if (!w.second.data) return;
    const std::size_t D = w.first.dims[1];
    Scatter<T, L, R, RO> s{rows<T>(idx.first, D), g.data, {}, {}, w.second.data, w.second.strides[0], w.second.strides[1]};
    for (std::size_t a = 0; a < RO; ++a) s.gdims[a] = g.dims[a], s.gst[a] = g.strides[a];
    backend::device::for_n(idx.first.size() * D, s);
  }

  template <class T, class L, std::size_t R, std::size_t RO>
  void forward(const detail::View<T, RO>& out, const detail::View<T, 2>& w, const detail::View<L, R>& idx) const {
    const std::size_t V = w.dims[0], D = w.dims[1];
    detail::for_each_offset(idx, [&](std::size_t k, std::ptrdiff_t off) {
      const T* src = w.data + static_cast<std::ptrdiff_t>(row(idx.data[off], V)) * w.strides[0];
      T* dst = out.data + k * D;  // the output is the kernel's own contiguous buffer
      for (std::size_t d = 0; d < D; ++d) dst[d] = src[static_cast<std::ptrdiff_t>(d) * w.strides[1]];
    });
  }
  template <class T, class L, std::size_t R, std::size_t RO>
  void backward(const detail::View<T, RO>& g, const detail::View<T, RO>&,
                const std::pair<detail::View<T, 2>, detail::View<T, 2>>& w,
                const std::pair<detail::View<L, R>, detail::View<L, R>>& idx) const {
    if (!w.second.data) return;
    const std::size_t V = w.first.dims[0], D = w.first.dims[1];
    const std::ptrdiff_t gs = g.strides[RO - 1];
    detail::for_each_offset(idx.first, [&](std::size_t k, std::ptrdiff_t off) {
      T* dst = w.second.data + static_cast<std::ptrdiff_t>(row(idx.first.data[off], V)) * w.second.strides[0];
      const std::ptrdiff_t goff = detail::row_offset(k, g);
      for (std::size_t d = 0; d < D; ++d) dst[static_cast<std::ptrdiff_t>(d) * w.second.strides[1]] += g.data[goff + static_cast<std::ptrdiff_t>(d) * gs];
    });
  }
};

}  // namespace ops

/// Rows of `table` [V, D] picked by integer `indices` [...]: a tensor [..., D]. Its gradient with respect
/// to the table is a scatter-add of the incoming gradient rows (repeated indices accumulate).
template <Expression W, Expression I>
auto embedding(const W& table, const I& indices) {
  constexpr bool ok = shape_t<W>::rank == 2 && FloatDtype<value_t<W>> && std::is_integral_v<value_t<I>> &&
                      shape_t<I>::rank + 1 <= max_rank;
  detail::check_embedding<ok, shape_t<W>, shape_t<I>>{};
  if constexpr (ok) return make_node(ops::Embedding{}, table, indices);
}

}  // namespace loom

namespace loom {
namespace ops {
/// Evaluates to a scalar 0 and, as a side effect of the forward pass, copies x's value into a tensor the
/// caller owns (resized only when x's extents change). Lets one program also hand out an intermediate
/// value — the final state of a recurrent layer, the keys and values of an attention layer — without a
/// second program recomputing it. No gradient flows through it.
template <class T, std::size_t R, class D = cpu>
struct Export {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = false;
  static constexpr std::string_view name = "export";
  Tensor<T, DynShape<R>, D>* target;
  template <class X>
  using shape = Shape<>;
  Dims<0> dims(const Dims<R>&) const { return {}; }
  /// A strided copy on the program's device K.
  template <class K>
  void forward(on<K>, const detail::View<T, 0>& out, const detail::View<T, R>& x) const {
    if (target->dims() != x.dims) *target = Tensor<T, DynShape<R>, D>(x.dims);
    backend::Exec<K>::template apply<backend::Mode::assign>(
        detail::View<T, R>{target->data(), x.dims, contiguous_strides(x.dims)}, x);
    detail::DeviceMemory<D>::fill(out.data, 1, T(0));
  }
};
}  // namespace ops

/// A scalar 0 whose evaluation writes x's value into `target` (add it to a loss: `loss + export_to(s, t)`).
template <Expression X>
auto export_to(const X& x, Tensor<value_t<X>, DynShape<shape_t<X>::rank>, device_t<X>>& target) {
  return make_node(ops::Export<value_t<X>, shape_t<X>::rank, device_t<X>>{&target}, x);
}
}  // namespace loom

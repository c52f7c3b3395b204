// loom/ops/shape.hpp — ops that move elements without arithmetic. Views (reshape, permute/transpose,
// broadcast_to, slice, flip, undilate) cost nothing: their value is a strided view of the input and so
// is their gradient. Kernels (concat, pad, dilate) write a buffer.
//   VJPs: a view's gradient is the same view of the input's gradient (accumulation through stride 0
//   sums a broadcast back); concat/pad/dilate take the matching strided slice of g.
#pragma once
#include "../backend/cpu/fused.hpp"
#include <limits>

#include "op.hpp"

namespace loom {

namespace detail {
template <bool Ok, class From, class To>
struct check_reshape {
  static_assert(Ok, "loom::reshape: element counts differ (see the Shape<...> arguments of check_reshape below)");
  static constexpr bool value = Ok;
};
template <bool Ok, class S, int Axis>
struct check_axis_in_range {
  static_assert(Ok, "loom: axis out of range for the operand's rank (see check_axis_in_range below)");
  static constexpr bool value = Ok;
};
template <bool Ok, class A, class B>
struct check_concat {
  static_assert(Ok, "loom::concat: operands differ in rank or in an extent off the concatenation axis (see "
                    "check_concat below)");
  static constexpr bool value = Ok;
};

template <class S, int Axis>
constexpr std::size_t axis_of = Axis < 0 ? static_cast<std::size_t>(Axis + static_cast<int>(S::rank)) : static_cast<std::size_t>(Axis);

template <class S, std::size_t Ax, std::size_t E>
struct set_extent {
  static constexpr auto value = [] {
    auto e = S::extents;
    e[Ax] = E;
    return e;
  }();
};
template <class S, std::size_t Ax, std::size_t E>
using with_extent = shape_from_array<set_extent<S, Ax, E>>;

template <class S, std::size_t Ax>
struct unsqueeze_extents {
  static constexpr auto value = [] {
    std::array<std::size_t, S::rank + 1> r{};
    for (std::size_t i = 0, k = 0; i <= S::rank; ++i) r[i] = i == Ax ? 1 : S::extents[k++];
    return r;
  }();
};

template <std::size_t R>
constexpr std::size_t count_dyn(const std::array<std::size_t, R>& e) {
  std::size_t n = 0;
  for (auto x : e) n += x == dyn;
  return n;
}
}  // namespace detail

namespace ops {

struct ViewOp {
  static constexpr Kind kind = Kind::view;
  static constexpr bool differentiable = true;
};

/// Same elements, new shape S2 (at most one `dyn` extent, inferred from the element count).
template <ShapeType S2>
struct Reshape : ViewOp {
  static constexpr std::string_view name = "reshape";
  static constexpr bool needs_contiguous = true;
  template <class S>
  using shape = S2;
  template <class T, std::size_t R>
  detail::View<T, S2::rank> view(const detail::View<T, R>& in) const {
    Dims<S2::rank> d = S2::dims_or(1);
    const std::size_t n = in.size(), known = numel(d);
    for (std::size_t i = 0; i < S2::rank; ++i)
      if (S2::extents[i] == dyn) d[i] = known ? n / known : 0;
    if (numel(d) != n)
      throw shape_error("loom::reshape: cannot reshape " + to_string(in.dims) + " to " + shape_string<S2>());
    return {in.data, d, contiguous_strides(d)};
  }
};

template <std::size_t... I>
struct Permute : ViewOp {
  static constexpr std::string_view name = "permute";
  template <class S>
  using shape = decltype(detail::permute_shape<S>(std::index_sequence<I...>{}));
  template <class T, std::size_t R>
  detail::View<T, R> view(const detail::View<T, R>& in) const {
    return {in.data, {in.dims[I]...}, {in.strides[I]...}};
  }
};

template <ShapeType S2>
struct BroadcastTo : ViewOp {
  static constexpr std::string_view name = "broadcast_to";
  Dims<S2::rank> dims_{};  // run-time extents for S2's `dyn` axes (0: take the input's)
  template <class S>
  using shape = S2;
  template <class T, std::size_t R>
  detail::View<T, S2::rank> view(const detail::View<T, R>& in) const {
    Dims<S2::rank> to{};
    for (std::size_t i = 0; i < S2::rank; ++i) {
      to[i] = S2::extents[i] != dyn ? S2::extents[i] : dims_[i];
      if (to[i] == 0 && i >= S2::rank - R) to[i] = in.dims[i - (S2::rank - R)];
    }
    if (broadcast_dims(in.dims, to, "loom::broadcast_to") != to)
      throw shape_error("loom::broadcast_to: cannot broadcast " + to_string(in.dims) + " to " + to_string(to));
    return {in.data, to, broadcast_strides(in.dims, in.strides, to)};
  }
};

/// start, start+step, ... < stop along Axis (negative bounds count from the end, clamped like Python).
template <int Axis>
struct Slice : ViewOp {
  static constexpr std::string_view name = "slice";
  std::ptrdiff_t start, stop, step;
  template <class S>
  using shape = detail::with_extent<S, detail::axis_of<S, Axis>, dyn>;
  template <class T, std::size_t R>
  detail::View<T, R> view(const detail::View<T, R>& in) const {
    constexpr std::size_t ax = detail::norm_axis(Axis, R);
    const auto n = static_cast<std::ptrdiff_t>(in.dims[ax]);
    std::ptrdiff_t b = start < 0 ? start + n : start, e = stop < 0 ? stop + n : stop;
    b = std::clamp<std::ptrdiff_t>(b, 0, n);
    e = std::clamp<std::ptrdiff_t>(e, b, n);
    auto v = in;
    v.dims[ax] = static_cast<std::size_t>((e - b + step - 1) / step);
    v.strides[ax] = in.strides[ax] * step;
    if (in.data) v.data = in.data + b * in.strides[ax];
    return v;
  }
};

/// Len elements from Start along Axis, with a static extent (as torch.narrow).
template <int Axis, std::size_t Start, std::size_t Len>
struct Narrow : ViewOp {
  static constexpr std::string_view name = "narrow";
  template <class S>
  using shape = detail::with_extent<S, detail::axis_of<S, Axis>, Len>;
  template <class T, std::size_t R>
  detail::View<T, R> view(const detail::View<T, R>& in) const {
    constexpr std::size_t ax = detail::norm_axis(Axis, R);
    if (in.dims[ax] < Start + Len)
      throw shape_error("loom::narrow: [" + std::to_string(Start) + ", " + std::to_string(Start + Len) + ") along axis " +
                        std::to_string(ax) + " is outside " + to_string(in.dims));
    auto v = in;
    v.dims[ax] = Len;
    if (in.data) v.data = in.data + static_cast<std::ptrdiff_t>(Start) * in.strides[ax];
    return v;
  }
};

template <int Axis>
struct Flip : ViewOp {
  static constexpr std::string_view name = "flip";
  template <class S>
  using shape = S;
  template <class T, std::size_t R>
  detail::View<T, R> view(const detail::View<T, R>& in) const {
    constexpr std::size_t ax = detail::norm_axis(Axis, R);
    auto v = in;
    if (in.data && in.dims[ax]) v.data = in.data + static_cast<std::ptrdiff_t>(in.dims[ax] - 1) * in.strides[ax];
    v.strides[ax] = -in.strides[ax];
    return v;
  }
};

/// Concatenation along Axis of inputs that agree elsewhere.
template <int Axis>
struct Concat {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = true;
  static constexpr std::string_view name = "concat";
  template <class S0, class... S>
  struct extents {
    static constexpr std::size_t ax = detail::axis_of<S0, Axis>;
    static constexpr auto value = [] {
      auto e = S0::extents;
      const bool any_dyn = S0::extents[ax] == dyn || ((S::extents[ax] == dyn) || ...);
      e[ax] = any_dyn ? dyn : (S0::extents[ax] + ... + S::extents[ax]);
      return e;
    }();
  };
  template <class... S>
  using shape = detail::shape_from_array<extents<S...>>;

  template <std::size_t R, class... D>
  Dims<R> dims(const Dims<R>& d0, const D&... d) const {
    constexpr std::size_t ax = detail::norm_axis(Axis, R);
    Dims<R> r = d0;
    auto add = [&](const Dims<R>& x) {
      for (std::size_t i = 0; i < R; ++i)
        if (i != ax && x[i] != d0[i])
          throw shape_error("loom::concat: shapes " + to_string(d0) + " and " + to_string(x) + " differ off axis " +
                            std::to_string(ax));
      r[ax] += x[ax];
    };
    (add(d), ...);
    (void)add;  // (unused when d is empty)
    return r;
  }
  /// Calls f(slice of `whole` for input k, k) for each input, in order.
  template <class T, std::size_t R, class... V, class F>
  static void parts(const detail::View<T, R>& whole, F&& f, const V&... in) {
    constexpr std::size_t ax = detail::norm_axis(Axis, R);
    std::size_t at = 0;
    auto one = [&](const auto& v) {
      const auto& d = [&]() -> const auto& {
        if constexpr (requires { v.dims; }) return v.dims;
        else return v.first.dims;  // (value, gradient) pairs in backward
      }();
      auto s = whole;
      s.data = whole.data + static_cast<std::ptrdiff_t>(at) * whole.strides[ax];
      s.dims[ax] = d[ax];
      at += d[ax];
      f(s, v);
    };
    (one(in), ...);
  }
  // One implementation for every device: strided copies on D's fused loops.
  template <class D, class T, std::size_t R, class... V>
  void forward(on<D>, const detail::View<T, R>& out, const V&... in) const {
    parts(out, [](const auto& s, const auto& v) { backend::Exec<D>::template apply<backend::Mode::assign>(s, v); }, in...);
  }
  template <class D, class T, std::size_t R, class... P>
  void backward(on<D>, const detail::View<T, R>& g, const detail::View<T, R>&, const P&... in) const {
    parts(g, [](const auto& s, const auto& p) {
      if (p.second.data) backend::Exec<D>::template apply<backend::Mode::add>(p.second, s);
    }, in...);
  }
};

/// Zero padding of Before and After elements on Axis.
template <int Axis, std::size_t Before, std::size_t After>
struct Pad {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = true;
  static constexpr std::string_view name = "pad";
  template <class S>
  using shape = detail::with_extent<S, detail::axis_of<S, Axis>,
                                    S::extents[detail::axis_of<S, Axis>] == dyn ? dyn : S::extents[detail::axis_of<S, Axis>] + Before + After>;
  template <std::size_t R>
  Dims<R> dims(Dims<R> d) const {
    d[detail::norm_axis(Axis, R)] += Before + After;
    return d;
  }
  template <class T, std::size_t R>
  static detail::View<T, R> inner(detail::View<T, R> v) {
    constexpr std::size_t ax = detail::norm_axis(Axis, R);
    v.data += static_cast<std::ptrdiff_t>(Before) * v.strides[ax];
    v.dims[ax] -= Before + After;
    return v;
  }
  template <class D, class T, std::size_t R>
  void forward(on<D>, const detail::View<T, R>& out, const detail::View<T, R>& in) const {
    detail::DeviceMemory<D>::fill(out.data, out.size(), T{0});
    backend::Exec<D>::template apply<backend::Mode::assign>(inner(out), in);
  }
  template <class D, class T, std::size_t R>
  void backward(on<D>, const detail::View<T, R>& g, const detail::View<T, R>&,
                const std::pair<detail::View<T, R>, detail::View<T, R>>& in) const {
    if (in.second.data) backend::Exec<D>::template apply<backend::Mode::add>(in.second, inner(g));
  }
};

/// Inserts D zeros after every element along Axis: extent n -> n * (D + 1) (as needle's dilate).
template <int Axis, std::size_t D>
struct Dilate {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = true;
  static constexpr std::string_view name = "dilate";
  template <class S>
  using shape = detail::with_extent<S, detail::axis_of<S, Axis>,
                                    S::extents[detail::axis_of<S, Axis>] == dyn ? dyn : S::extents[detail::axis_of<S, Axis>] * (D + 1)>;
  template <std::size_t R>
  Dims<R> dims(Dims<R> d) const {
    d[detail::norm_axis(Axis, R)] *= D + 1;
    return d;
  }
  template <class T, std::size_t R>
  static detail::View<T, R> every(detail::View<T, R> v) {
    constexpr std::size_t ax = detail::norm_axis(Axis, R);
    v.dims[ax] /= D + 1;
    v.strides[ax] *= static_cast<std::ptrdiff_t>(D + 1);
    return v;
  }
  template <class Dev, class T, std::size_t R>
  void forward(on<Dev>, const detail::View<T, R>& out, const detail::View<T, R>& in) const {
    detail::DeviceMemory<Dev>::fill(out.data, out.size(), T{0});
    backend::Exec<Dev>::template apply<backend::Mode::assign>(every(out), in);
  }
  template <class Dev, class T, std::size_t R>
  void backward(on<Dev>, const detail::View<T, R>& g, const detail::View<T, R>&,
                const std::pair<detail::View<T, R>, detail::View<T, R>>& in) const {
    if (in.second.data) backend::Exec<Dev>::template apply<backend::Mode::add>(in.second, every(g));
  }
};

}  // namespace ops

// ---- user-facing functions -----------------------------------------------------------------------------

template <ShapeType S2, Expression X>
auto reshape(const X& x) {
  using S = shape_t<X>;
  static_assert(detail::count_dyn(S2::extents) <= 1, "loom::reshape: the target shape may have at most one dyn extent");
  constexpr bool ok = !(S::is_static && S2::is_static) || S::static_size == S2::static_size;
  detail::check_reshape<ok, S, S2>{};
  if constexpr (ok) return make_node(ops::Reshape<S2>{}, x);
}
/// [d0, d1, ...] -> [d0, d1 * ...].
template <Expression X>
auto flatten(const X& x) {
  using S = shape_t<X>;
  static_assert(S::rank >= 1, "loom::flatten: needs rank >= 1");
  constexpr std::size_t rest = [] {
    std::size_t n = 1;
    for (std::size_t i = 1; i < S::rank; ++i) {
      if (S::extents[i] == dyn) return dyn;
      n *= S::extents[i];
    }
    return n;
  }();
  if constexpr (S::extents[0] == dyn && rest == dyn) {
    static_assert(rest != dyn, "loom::flatten: with a dyn batch, the other extents must be static");
  } else {
    return reshape<Shape<S::extents[0], rest>>(x);
  }
}
template <std::size_t... I, Expression X>
auto permute(const X& x) {
  static_assert(sizeof...(I) == shape_t<X>::rank, "loom::permute: give one axis per dimension");
  return make_node(ops::Permute<I...>{}, x);
}
/// Swaps axes A and B (default: the last two).
template <int A = -2, int B = -1, Expression X>
auto transpose(const X& x) {
  constexpr std::size_t R = shape_t<X>::rank;
  constexpr std::size_t a = detail::norm_axis(A, R), b = detail::norm_axis(B, R);
  static_assert(a < R && b < R, "loom::transpose: axis out of range");
  return [&]<std::size_t... I>(std::index_sequence<I...>) {
    return permute<(I == a ? b : I == b ? a : I)...>(x);
  }(std::make_index_sequence<R>{});
}
template <ShapeType S2, Expression X>
auto broadcast_to(const X& x, const Dims<S2::rank>& dims = {}) {
  using S = shape_t<X>;
  constexpr bool ok = S2::rank >= S::rank && broadcastable_v<S, S2> && std::is_same_v<broadcast_t<S, S2>, S2>;
  detail::check_broadcast<ok, S, S2>{};
  if constexpr (ok) return make_node(ops::BroadcastTo<S2>{{}, dims}, x);
}
/// Elements [Start, Start + Len) along Axis: a view whose extent there is the static Len.
template <int Axis, std::size_t Start, std::size_t Len, Expression X>
auto narrow(const X& x) {
  using S = shape_t<X>;
  constexpr std::size_t ax = detail::norm_axis(Axis, S::rank);
  constexpr bool ok = ax < S::rank;
  detail::check_axis_in_range<ok, S, Axis>{};
  if constexpr (ok) {
    static_assert(S::extents[ax] == dyn || Start + Len <= S::extents[ax], "loom::narrow: the range exceeds the extent");
    return make_node(ops::Narrow<Axis, Start, Len>{}, x);
  }
}
template <int Axis, Expression X>
auto slice(const X& x, std::ptrdiff_t start, std::ptrdiff_t stop, std::ptrdiff_t step = 1) {
  constexpr bool ok = detail::norm_axis(Axis, shape_t<X>::rank) < shape_t<X>::rank;
  detail::check_axis_in_range<ok, shape_t<X>, Axis>{};
  if (step <= 0) throw shape_error("loom::slice: step must be positive (use flip to reverse)");
  if constexpr (ok) return make_node(ops::Slice<Axis>{{}, start, stop, step}, x);
}
template <int Axis, Expression X>
auto flip(const X& x) {
  constexpr bool ok = detail::norm_axis(Axis, shape_t<X>::rank) < shape_t<X>::rank;
  detail::check_axis_in_range<ok, shape_t<X>, Axis>{};
  if constexpr (ok) return make_node(ops::Flip<Axis>{}, x);
}
template <int Axis, Expression X0, Expression... X>
auto concat(const X0& x0, const X&... x) {
  using S0 = shape_t<X0>;
  constexpr std::size_t ax = detail::axis_of<S0, Axis>;
  [[maybe_unused]] auto agree = []<class S>(std::type_identity<S>) {  // used in constant expressions only
    if constexpr (S::rank != S0::rank) return false;
    else {
      for (std::size_t i = 0; i < S0::rank; ++i)
        if (i != ax && S::extents[i] != S0::extents[i] && S::extents[i] != dyn && S0::extents[i] != dyn) return false;
      return true;
    }
  };
  constexpr bool ok = (agree(std::type_identity<shape_t<X>>{}) && ... && true);
  (detail::check_concat<agree(std::type_identity<shape_t<X>>{}), S0, shape_t<X>>{}, ...);
  if constexpr (ok) return make_node(ops::Concat<Axis>{}, x0, x...);
}
/// Stacks equal-shaped inputs along a new axis Axis.
template <int Axis = 0, Expression X0, Expression... X>
auto stack(const X0& x0, const X&... x) {
  using S = shape_t<X0>;
  constexpr std::size_t ax = Axis < 0 ? static_cast<std::size_t>(Axis + static_cast<int>(S::rank) + 1) : static_cast<std::size_t>(Axis);
  using U = detail::shape_from_array<detail::unsqueeze_extents<S, ax>>;
  static_assert(detail::count_dyn(U::extents) <= 1, "loom::stack: at most one dyn extent is supported");
  return concat<static_cast<int>(ax)>(reshape<U>(x0), reshape<U>(x)...);
}
/// Splits x along Axis into pieces of the given sizes (views of x).
template <int Axis, Expression X, class... Sz>
auto split(const X& x, Sz... sizes) {
  std::ptrdiff_t at = 0;
  auto piece = [&](std::ptrdiff_t n) {
    auto s = slice<Axis>(x, at, at + n);
    at += n;
    return s;
  };
  return std::tuple{piece(static_cast<std::ptrdiff_t>(sizes))...};
}
template <int Axis, std::size_t Before, std::size_t After, Expression X>
auto pad(const X& x) {
  constexpr bool ok = detail::norm_axis(Axis, shape_t<X>::rank) < shape_t<X>::rank;
  detail::check_axis_in_range<ok, shape_t<X>, Axis>{};
  if constexpr (ok) return make_node(ops::Pad<Axis, Before, After>{}, x);
}
template <int Axis, std::size_t D, Expression X>
auto dilate(const X& x) {
  constexpr bool ok = detail::norm_axis(Axis, shape_t<X>::rank) < shape_t<X>::rank;
  detail::check_axis_in_range<ok, shape_t<X>, Axis>{};
  if constexpr (ok) return make_node(ops::Dilate<Axis, D>{}, x);
}
/// Keeps every (D+1)-th element along Axis: the inverse of dilate (a view).
template <int Axis, std::size_t D, Expression X>
auto undilate(const X& x) { return slice<Axis>(x, 0, std::numeric_limits<std::ptrdiff_t>::max() / 2, static_cast<std::ptrdiff_t>(D + 1)); }

}  // namespace loom

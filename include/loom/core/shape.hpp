// loom/core/shape.hpp — static shapes with run-time (`dyn`) extents, and their broadcast rules.
#pragma once
#include <array>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include "error.hpp"

namespace loom {

/// An extent known only when the program runs (batch, sequence length).
inline constexpr std::size_t dyn = static_cast<std::size_t>(-1);

/// Highest rank a tensor may have.
inline constexpr std::size_t max_rank = 8;

template <std::size_t R>
using Dims = std::array<std::size_t, R>;
template <std::size_t R>
using Strides = std::array<std::ptrdiff_t, R>;

/// A shape: one extent per axis, each a number or `dyn`.
template <std::size_t... Es>
struct Shape {
  static constexpr std::size_t rank = sizeof...(Es);
  static_assert(rank <= max_rank, "loom::Shape: rank exceeds loom::max_rank (8)");
  static constexpr Dims<rank> extents{Es...};
  static constexpr bool is_static = ((Es != dyn) && ...);
  /// Number of elements when every extent is static, else `dyn`.
  static constexpr std::size_t static_size = is_static ? (std::size_t{1} * ... * Es) : dyn;
  /// Extents with `dyn` replaced by `fill` (static shapes: the extents themselves).
  static constexpr Dims<rank> dims_or(std::size_t fill = 0) { return Dims<rank>{(Es == dyn ? fill : Es)...}; }
};

namespace detail {
template <std::size_t... I>
constexpr auto dyn_shape_impl(std::index_sequence<I...>) -> Shape<(I, dyn)...>;
}  // namespace detail
/// Rank-R shape with every extent `dyn`.
template <std::size_t R>
using DynShape = decltype(detail::dyn_shape_impl(std::make_index_sequence<R>{}));

template <class S>
struct is_shape : std::false_type {};
template <std::size_t... Es>
struct is_shape<Shape<Es...>> : std::true_type {};
template <class S>
concept ShapeType = is_shape<S>::value;
template <class S>
concept StaticShape = ShapeType<S> && S::is_static;

namespace detail {

template <class S, std::size_t... I>
constexpr auto shape_from_array_impl(std::index_sequence<I...>) -> Shape<S::value[I]...>;

/// Builds Shape<...> from a constexpr array held in a struct `S::value`.
template <class S>
using shape_from_array = decltype(shape_from_array_impl<S>(std::make_index_sequence<S::value.size()>{}));

}  // namespace detail

/// Run-time extents printed as "[2, 3, 4]".
template <std::size_t R>
std::string to_string(const Dims<R>& d) {
  std::string s = "[";
  for (std::size_t i = 0; i < R; ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

/// Static extents printed as "[dyn, 784]".
template <ShapeType S>
std::string shape_string() {
  std::string s = "[";
  for (std::size_t i = 0; i < S::rank; ++i)
    s += (i ? ", " : "") + (S::extents[i] == dyn ? std::string("dyn") : std::to_string(S::extents[i]));
  return s + "]";
}

template <std::size_t R>
constexpr std::size_t numel(const Dims<R>& d) {
  std::size_t n = 1;
  for (auto e : d) n *= e;
  return n;
}

template <std::size_t R>
constexpr Strides<R> contiguous_strides(const Dims<R>& d) {
  Strides<R> s{};
  std::ptrdiff_t acc = 1;
  for (std::size_t i = R; i-- > 0;) {
    s[i] = acc;
    acc *= static_cast<std::ptrdiff_t>(d[i]);
  }
  return s;
}

/// Throws shape_error unless run-time extents `d` fit the static shape S.
template <ShapeType S>
void check_dims(const Dims<S::rank>& d, const char* what) {
  for (std::size_t i = 0; i < S::rank; ++i)
    if (S::extents[i] != dyn && S::extents[i] != d[i])
      throw shape_error(std::string(what) + ": run-time shape " + to_string(d) + " does not match static shape " +
                        shape_string<S>());
}

// ---------------------------------------------------------------------------------------------------
// Broadcasting (NumPy rules, right-aligned). Statically, `dyn` against N gives N (checked when the step
// runs); at run time a `dyn` extent of 1 stretches like a static 1. Fused loops read every leaf through
// broadcast strides relative to the loop's extents, so run-time stretching needs no static knowledge.

namespace detail {

constexpr std::size_t broadcast_extent(std::size_t a, std::size_t b) {
  if (a == b) return a;
  if (a == 1) return b;
  if (b == 1) return a;
  if (a == dyn) return b;
  if (b == dyn) return a;
  return 0;  // incompatible
}

template <class A, class B>
struct broadcast_result {
  static constexpr std::size_t rank = A::rank > B::rank ? A::rank : B::rank;
  static constexpr auto compute() {
    std::array<std::size_t, rank> r{};
    bool ok = true;
    for (std::size_t i = 0; i < rank; ++i) {
      std::size_t a = i < rank - A::rank ? 1 : A::extents[i - (rank - A::rank)];
      std::size_t b = i < rank - B::rank ? 1 : B::extents[i - (rank - B::rank)];
      r[i] = broadcast_extent(a, b);
      ok = ok && r[i] != 0;
    }
    return std::pair{r, ok};
  }
  static constexpr auto value = compute().first;
  static constexpr bool ok = compute().second;
};

/// Instantiated with the two shapes so that the compiler's note shows them next to the message.
template <bool Ok, class Lhs, class Rhs>
struct check_broadcast {
  static_assert(Ok, "loom::broadcast: shapes are not broadcast-compatible (lhs and rhs shapes are the "
                    "Shape<...> arguments of check_broadcast below)");
  static constexpr bool value = Ok;
};

}  // namespace detail

template <ShapeType A, ShapeType B>
constexpr bool broadcastable_v = detail::broadcast_result<A, B>::ok;

template <ShapeType A, ShapeType B>
using broadcast_t = detail::shape_from_array<detail::broadcast_result<A, B>>;

/// Run-time broadcast of two extents lists (ranks already those of A and B); throws naming both shapes.
template <std::size_t RA, std::size_t RB>
auto broadcast_dims(const Dims<RA>& a, const Dims<RB>& b, const char* what) {
  constexpr std::size_t R = RA > RB ? RA : RB;
  Dims<R> r{};
  for (std::size_t i = 0; i < R; ++i) {
    std::size_t x = i < R - RA ? 1 : a[i - (R - RA)];
    std::size_t y = i < R - RB ? 1 : b[i - (R - RB)];
    if (x == y || y == 1) r[i] = x;
    else if (x == 1) r[i] = y;
    else
      throw shape_error(std::string(what) + ": shapes " + to_string(a) + " and " + to_string(b) +
                        " are not broadcast-compatible");
  }
  return r;
}

/// Strides that read a tensor of extents `d`/strides `s` as if broadcast to rank R with extents `to`
/// (stride 0 on stretched or missing axes).
template <std::size_t R, std::size_t RS>
Strides<R> broadcast_strides(const Dims<RS>& d, const Strides<RS>& s, const Dims<R>& to) {
  static_assert(RS <= R);
  Strides<R> r{};
  for (std::size_t i = 0; i < R; ++i) {
    if (i < R - RS) continue;
    std::size_t j = i - (R - RS);
    r[i] = (d[j] == 1 && to[i] != 1) ? 0 : s[j];
  }
  return r;
}

}  // namespace loom

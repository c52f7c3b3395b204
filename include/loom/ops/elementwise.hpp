// loom/ops/elementwise.hpp — elementwise ops with NumPy broadcasting. Each op: the scalar math, the
// packet math (Eigen's, where it exists) and the VJP as an expression, so backward passes fuse too.
#pragma once
#include <cmath>
#include <numbers>

#include "op.hpp"

namespace loom {

namespace ei = Eigen::internal;

namespace ops {

// Binary arithmetic -------------------------------------------------------------------------------------
/// z = x + y;  dx = g, dy = g
struct Add : ElementwiseOp {
  static constexpr std::string_view name = "add";
  template <class T> LOOM_HOST_DEVICE T apply(T x, T y) const { return x + y; }
  template <class P> P packet(const P& x, const P& y) const { return ei::padd(x, y); }
  auto vjp(const auto& g, const auto&, const auto&, const auto&) const { return std::tuple{g, g}; }
};
/// z = x - y;  dx = g, dy = -g
struct Sub : ElementwiseOp {
  static constexpr std::string_view name = "sub";
  template <class T> LOOM_HOST_DEVICE T apply(T x, T y) const { return x - y; }
  template <class P> P packet(const P& x, const P& y) const { return ei::psub(x, y); }
  auto vjp(const auto& g, const auto&, const auto&, const auto&) const;
};
/// z = x * y;  dx = g * y, dy = g * x
struct Mul : ElementwiseOp {
  static constexpr std::string_view name = "mul";
  template <class T> LOOM_HOST_DEVICE T apply(T x, T y) const { return x * y; }
  template <class P> P packet(const P& x, const P& y) const { return ei::pmul(x, y); }
  auto vjp(const auto& g, const auto&, const auto& x, const auto& y) const;
};
/// z = x / y;  dx = g / y, dy = -g * z / y
struct Div : ElementwiseOp {
  static constexpr std::string_view name = "div";
  template <class T> LOOM_HOST_DEVICE T apply(T x, T y) const { return x / y; }
  template <class P> P packet(const P& x, const P& y) const { return ei::pdiv(x, y); }
  auto vjp(const auto& g, const auto& z, const auto& x, const auto& y) const;
};
/// z = x ^ y;  dx = g * y * x^(y-1), dy = g * z * log(x)
struct Pow : ElementwiseOp {
  static constexpr std::string_view name = "pow";
  template <class T> LOOM_HOST_DEVICE T apply(T x, T y) const { return std::pow(x, y); }
  auto vjp(const auto& g, const auto& z, const auto& x, const auto& y) const;
};
/// z = max(x, y);  dx = g * (x >= y), dy = g * (x < y)
struct Maximum : ElementwiseOp {
  static constexpr std::string_view name = "maximum";
  template <class T> LOOM_HOST_DEVICE T apply(T x, T y) const { return x >= y ? x : y; }
  auto vjp(const auto& g, const auto&, const auto& x, const auto& y) const;
};
/// z = min(x, y);  dx = g * (x <= y), dy = g * (x > y)
struct Minimum : ElementwiseOp {
  static constexpr std::string_view name = "minimum";
  template <class T> LOOM_HOST_DEVICE T apply(T x, T y) const { return x <= y ? x : y; }
  auto vjp(const auto& g, const auto&, const auto& x, const auto& y) const;
};

// Comparisons: 1 where true, 0 where false, in the operands' dtype; no gradient flows through them.
enum class Cmp { lt, le, gt, ge, eq };
template <Cmp C>
struct Compare : ElementwiseOp {
  static constexpr std::string_view name = C == Cmp::lt ? "less" : C == Cmp::le ? "less_equal" : C == Cmp::gt ? "greater"
                                           : C == Cmp::ge ? "greater_equal" : "equal";
  template <class T> LOOM_HOST_DEVICE T apply(T x, T y) const {
    const bool r = C == Cmp::lt ? x < y : C == Cmp::le ? x <= y : C == Cmp::gt ? x > y : C == Cmp::ge ? x >= y : x == y;
    return r ? T{1} : T{0};
  }
  template <class P> P packet(const P& x, const P& y) const {
    const P m = C == Cmp::lt ? ei::pcmp_lt(x, y) : C == Cmp::le ? ei::pcmp_le(x, y) : C == Cmp::gt ? ei::pcmp_lt(y, x)
              : C == Cmp::ge ? ei::pcmp_le(y, x) : ei::pcmp_eq(x, y);
    return ei::pand(m, ei::pset1<P>(typename ei::unpacket_traits<P>::type(1)));
  }
  auto vjp(const auto&, const auto&, const auto&, const auto&) const { return std::tuple{NoGrad{}, NoGrad{}}; }
};
using Less = Compare<Cmp::lt>;
using LessEqual = Compare<Cmp::le>;
using Greater = Compare<Cmp::gt>;
using GreaterEqual = Compare<Cmp::ge>;
using Equal = Compare<Cmp::eq>;

/// z = c != 0 ? x : y;  dx = where(c, g, 0), dy = where(c, 0, g); no gradient to c
struct Where : ElementwiseOp {
  static constexpr std::string_view name = "where";
  template <class T> LOOM_HOST_DEVICE T apply(T c, T x, T y) const { return c != T{0} ? x : y; }
  auto vjp(const auto& g, const auto&, const auto& c, const auto&, const auto&) const;
};

// Unary -----------------------------------------------------------------------------------------------
/// Shared form of unary ops: Fn(x) with dFn expressed through x and z.
struct UnaryOp : ElementwiseOp {};

/// z = -x; dx = -g
struct Neg : UnaryOp {
  static constexpr std::string_view name = "neg";
  template <class T> LOOM_HOST_DEVICE T apply(T x) const { return -x; }
  template <class P> P packet(const P& x) const { return ei::pnegate(x); }
  auto vjp(const auto& g, const auto&, const auto&) const;
};
/// z = exp x; dx = g * z
struct Exp : UnaryOp {
  static constexpr std::string_view name = "exp";
  static constexpr bool keep_output = true;  // costly, and the vjp reads only z (see Program)
  template <class T> LOOM_HOST_DEVICE T apply(T x) const { return std::exp(x); }
  template <class P> P packet(const P& x) const { return ei::pexp(x); }
  auto vjp(const auto& g, const auto& z, const auto&) const;
};
/// z = log x; dx = g / x
struct Log : UnaryOp {
  static constexpr std::string_view name = "log";
  template <class T> LOOM_HOST_DEVICE T apply(T x) const { return std::log(x); }
  template <class P> P packet(const P& x) const { return ei::plog(x); }
  auto vjp(const auto& g, const auto&, const auto& x) const;
};
/// z = sqrt x; dx = g * 0.5 / z
struct Sqrt : UnaryOp {
  static constexpr std::string_view name = "sqrt";
  template <class T> LOOM_HOST_DEVICE T apply(T x) const { return std::sqrt(x); }
  template <class P> P packet(const P& x) const { return ei::psqrt(x); }
  auto vjp(const auto& g, const auto& z, const auto&) const;
};
/// z = sign x (0 at 0); dz = 0
struct Sign : UnaryOp {
  static constexpr std::string_view name = "sign";
  template <class T> LOOM_HOST_DEVICE T apply(T x) const { return T((x > T{0}) - (x < T{0})); }
  auto vjp(const auto&, const auto&, const auto&) const { return std::tuple{NoGrad{}}; }
};
/// z = |x|; dx = g * sign x
struct Abs : UnaryOp {
  static constexpr std::string_view name = "abs";
  template <class T> LOOM_HOST_DEVICE T apply(T x) const { return std::abs(x); }
  template <class P> P packet(const P& x) const { return ei::pabs(x); }
  auto vjp(const auto& g, const auto&, const auto& x) const;
};
/// z = tanh x; dx = g * (1 - z^2)
struct Tanh : UnaryOp {
  static constexpr std::string_view name = "tanh";
  static constexpr bool keep_output = true;  // costly, and the vjp reads only z (see Program)
  template <class T> LOOM_HOST_DEVICE T apply(T x) const { return std::tanh(x); }
  template <class P>
    requires std::is_same_v<typename ei::unpacket_traits<P>::type, float>
  P packet(const P& x) const { return ei::ptanh(x); }
  auto vjp(const auto& g, const auto& z, const auto&) const;
};
/// tanh's slope from its output: 1 - z^2, reading z once (z * z would evaluate an inlined tanh twice)
struct TanhSlope : UnaryOp {
  static constexpr std::string_view name = "tanh_slope";
  template <class T> LOOM_HOST_DEVICE T apply(T z) const { return T{1} - z * z; }
  template <class P> P packet(const P& z) const { return ei::psub(ei::pset1<P>(1), ei::pmul(z, z)); }
  auto vjp(const auto& g, const auto&, const auto& z) const;  // -2z
};
/// z = 1 / (1 + exp(-x)); dx = g * z * (1 - z)
struct Sigmoid : UnaryOp {
  static constexpr std::string_view name = "sigmoid";
  static constexpr bool keep_output = true;  // costly, and the vjp reads only z (see Program)
  template <class T> LOOM_HOST_DEVICE T apply(T x) const {
    return x >= T{0} ? T{1} / (T{1} + std::exp(-x)) : std::exp(x) / (T{1} + std::exp(x));
  }
  template <class P> P packet(const P& x) const { return ei::scalar_logistic_op<typename ei::unpacket_traits<P>::type>{}.packetOp(x); }
  auto vjp(const auto& g, const auto& z, const auto&) const;
};
/// sigmoid's slope from its output: z (1 - z), reading z once
struct SigmoidSlope : UnaryOp {
  static constexpr std::string_view name = "sigmoid_slope";
  template <class T> LOOM_HOST_DEVICE T apply(T z) const { return z * (T{1} - z); }
  template <class P> P packet(const P& z) const { return ei::pmul(z, ei::psub(ei::pset1<P>(1), z)); }
  auto vjp(const auto& g, const auto&, const auto& z) const;  // 1 - 2z
};
/// z = max(x, 0); dx = g * (x > 0)
struct Relu : UnaryOp {
  static constexpr std::string_view name = "relu";
  template <class T> LOOM_HOST_DEVICE T apply(T x) const { return x > T{0} ? x : T{0}; }
  template <class P> P packet(const P& x) const { return ei::pmax(x, ei::pzero(x)); }
  auto vjp(const auto& g, const auto&, const auto& x) const;
};
/// d gelu / dx = Phi(x) + x * phi(x)   (exact, erf form)
struct GeluGrad : UnaryOp {
  static constexpr std::string_view name = "gelu_grad";
  template <class T> LOOM_HOST_DEVICE T apply(T x) const {
    const T cdf = T(0.5) * (T(1) + std::erf(x * T(std::numbers::sqrt2 / 2)));
    return cdf + x * std::exp(T(-0.5) * x * x) * T(std::numbers::inv_sqrtpi / std::numbers::sqrt2);
  }
  auto vjp(const auto&, const auto&, const auto&) const { return std::tuple{NoGrad{}}; }  // not twice-differentiable here
};
/// z = x * Phi(x) (exact, as PyTorch's default); dx = g * gelu_grad(x)
struct Gelu : UnaryOp {
  static constexpr std::string_view name = "gelu";
  template <class T> LOOM_HOST_DEVICE T apply(T x) const { return T(0.5) * x * (T(1) + std::erf(x * T(std::numbers::sqrt2 / 2))); }
  auto vjp(const auto& g, const auto&, const auto& x) const;
};
/// z = 1 where lo <= x <= hi, else 0
struct InRange : UnaryOp {
  static constexpr std::string_view name = "in_range";
  double lo, hi;
  template <class T> LOOM_HOST_DEVICE T apply(T x) const { return (x >= T(lo) && x <= T(hi)) ? T{1} : T{0}; }
  auto vjp(const auto&, const auto&, const auto&) const { return std::tuple{NoGrad{}}; }
};
/// z = min(max(x, lo), hi); dx = g * (lo <= x <= hi)
struct Clamp : UnaryOp {
  static constexpr std::string_view name = "clamp";
  double lo, hi;
  template <class T> LOOM_HOST_DEVICE T apply(T x) const { return x < T(lo) ? T(lo) : x > T(hi) ? T(hi) : x; }
  auto vjp(const auto& g, const auto&, const auto& x) const;
};
/// z = x^p for a number p; dx = g * p * x^(p-1)
struct PowScalar : UnaryOp {
  static constexpr std::string_view name = "pow_scalar";
  double p;
  template <class T> LOOM_HOST_DEVICE T apply(T x) const {
    if (p == 1) return x;
    if (p == 2) return x * x;
    return T(std::pow(x, T(p)));
  }
  auto vjp(const auto& g, const auto&, const auto& x) const;
};
/// z = x, but no gradient flows back (torch's detach)
struct Detach : UnaryOp {
  static constexpr std::string_view name = "detach";
  static constexpr bool differentiable = false;
  template <class T> LOOM_HOST_DEVICE T apply(T x) const { return x; }
  template <class P> P packet(const P& x) const { return x; }
  auto vjp(const auto&, const auto&, const auto&) const { return std::tuple{NoGrad{}}; }
};
/// z = x (used to give a value its own buffer, e.g. `materialize(x)`)
struct Identity : UnaryOp {
  static constexpr std::string_view name = "identity";
  template <class T> LOOM_HOST_DEVICE T apply(T x) const { return x; }
  template <class P> P packet(const P& x) const { return x; }
  auto vjp(const auto& g, const auto&, const auto&) const { return std::tuple{g}; }
};

}  // namespace ops

// ---- user-facing functions and operators -------------------------------------------------------------

template <class X, class Y> requires ExprOrScalar<X, Y>
auto operator+(const X& x, const Y& y) { return elementwise(ops::Add{}, x, y); }
template <class X, class Y> requires ExprOrScalar<X, Y>
auto operator-(const X& x, const Y& y) { return elementwise(ops::Sub{}, x, y); }
template <class X, class Y> requires ExprOrScalar<X, Y>
auto operator*(const X& x, const Y& y) { return elementwise(ops::Mul{}, x, y); }
template <class X, class Y> requires ExprOrScalar<X, Y>
auto operator/(const X& x, const Y& y) { return elementwise(ops::Div{}, x, y); }
template <Expression X>
auto operator-(const X& x) { return make_node(ops::Neg{}, x); }

template <class X, class Y> requires ExprOrScalar<X, Y>
auto pow(const X& x, const Y& y) {
  if constexpr (std::is_arithmetic_v<Y>) return make_node(ops::PowScalar{{}, static_cast<double>(y)}, x);
  else return elementwise(ops::Pow{}, x, y);
}
template <class X, class Y> requires ExprOrScalar<X, Y>
auto maximum(const X& x, const Y& y) { return elementwise(ops::Maximum{}, x, y); }
template <class X, class Y> requires ExprOrScalar<X, Y>
auto minimum(const X& x, const Y& y) { return elementwise(ops::Minimum{}, x, y); }
template <class X, class Y> requires ExprOrScalar<X, Y>
auto less(const X& x, const Y& y) { return elementwise(ops::Less{}, x, y); }
template <class X, class Y> requires ExprOrScalar<X, Y>
auto less_equal(const X& x, const Y& y) { return elementwise(ops::LessEqual{}, x, y); }
template <class X, class Y> requires ExprOrScalar<X, Y>
auto greater(const X& x, const Y& y) { return elementwise(ops::Greater{}, x, y); }
template <class X, class Y> requires ExprOrScalar<X, Y>
auto greater_equal(const X& x, const Y& y) { return elementwise(ops::GreaterEqual{}, x, y); }
template <class X, class Y> requires ExprOrScalar<X, Y>
auto equal(const X& x, const Y& y) { return elementwise(ops::Equal{}, x, y); }
/// c != 0 ? x : y, broadcast over all three.
template <Expression C, class X, class Y>
auto where(const C& c, const X& x, const Y& y) { return elementwise(ops::Where{}, c, x, y); }

template <Expression X> auto exp(const X& x) { return make_node(ops::Exp{}, x); }
template <Expression X> auto log(const X& x) { return make_node(ops::Log{}, x); }
template <Expression X> auto sqrt(const X& x) { return make_node(ops::Sqrt{}, x); }
template <Expression X> auto abs(const X& x) { return make_node(ops::Abs{}, x); }
template <Expression X> auto sign(const X& x) { return make_node(ops::Sign{}, x); }
template <Expression X> auto tanh(const X& x) { return make_node(ops::Tanh{}, x); }
template <Expression X> auto sigmoid(const X& x) { return make_node(ops::Sigmoid{}, x); }
template <Expression X> auto relu(const X& x) { return make_node(ops::Relu{}, x); }
template <Expression X> auto gelu(const X& x) { return make_node(ops::Gelu{}, x); }
template <Expression X> auto detach(const X& x) { return make_node(ops::Detach{}, x); }
template <Expression X> auto clamp(const X& x, double lo, double hi) { return make_node(ops::Clamp{{}, lo, hi}, x); }
/// Forces x into its own buffer (the program otherwise decides).
template <Expression X> auto materialize(const X& x) { return make_node(ops::Identity{}, x); }

// ---- VJPs (after the operators they use) ------------------------------------------------------------
namespace ops {
auto Sub::vjp(const auto& g, const auto&, const auto&, const auto&) const { return std::tuple{g, -g}; }
auto Mul::vjp(const auto& g, const auto&, const auto& x, const auto& y) const { return std::tuple{g * y, g * x}; }
auto Div::vjp(const auto& g, const auto& z, const auto&, const auto& y) const { return std::tuple{g / y, -(g * z) / y}; }
auto Pow::vjp(const auto& g, const auto& z, const auto& x, const auto& y) const {
  return std::tuple{g * y * pow(x, y - 1), g * z * log(x)};
}
auto Maximum::vjp(const auto& g, const auto&, const auto& x, const auto& y) const {
  return std::tuple{g * greater_equal(x, y), g * less(x, y)};
}
auto Minimum::vjp(const auto& g, const auto&, const auto& x, const auto& y) const {
  return std::tuple{g * less_equal(x, y), g * greater(x, y)};
}
auto Where::vjp(const auto& g, const auto&, const auto& c, const auto&, const auto&) const {
  return std::tuple{NoGrad{}, where(c, g, 0), where(c, 0, g)};
}
auto Neg::vjp(const auto& g, const auto&, const auto&) const { return std::tuple{-g}; }
auto Exp::vjp(const auto& g, const auto& z, const auto&) const { return std::tuple{g * z}; }
auto Log::vjp(const auto& g, const auto&, const auto& x) const { return std::tuple{g / x}; }
auto Sqrt::vjp(const auto& g, const auto& z, const auto&) const { return std::tuple{g * 0.5 / z}; }
auto Abs::vjp(const auto& g, const auto&, const auto& x) const { return std::tuple{g * sign(x)}; }
auto Tanh::vjp(const auto& g, const auto& z, const auto&) const { return std::tuple{g * make_node(TanhSlope{}, z)}; }
auto TanhSlope::vjp(const auto& g, const auto&, const auto& z) const { return std::tuple{g * (z * -2)}; }
auto Sigmoid::vjp(const auto& g, const auto& z, const auto&) const { return std::tuple{g * make_node(SigmoidSlope{}, z)}; }
auto SigmoidSlope::vjp(const auto& g, const auto&, const auto& z) const { return std::tuple{g * (1 - 2 * z)}; }
auto Relu::vjp(const auto& g, const auto&, const auto& x) const { return std::tuple{g * greater(x, 0)}; }
auto Gelu::vjp(const auto& g, const auto&, const auto& x) const { return std::tuple{g * make_node(GeluGrad{}, x)}; }
auto Clamp::vjp(const auto& g, const auto&, const auto& x) const {
  return std::tuple{g * make_node(InRange{{}, lo, hi}, x)};
}
auto PowScalar::vjp(const auto& g, const auto&, const auto& x) const {
  return std::tuple{g * (make_node(PowScalar{{}, p - 1}, x) * p)};
}
}  // namespace ops

}  // namespace loom

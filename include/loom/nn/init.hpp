// loom/nn/init.hpp — parameter initializers (as torch.nn.init), drawing from a seedable Generator.
// fan_in = dims[1] * receptive field, fan_out = dims[0] * receptive field (receptive = product of
// dims[2:]), as PyTorch computes them for Linear [Out, In] and Conv [Cout, Cin, K, K] weights.
#pragma once
#include <cmath>

#include "../expr/expr.hpp"

namespace loom::nn::init {

template <class T, class S, class D>
std::pair<double, double> fans(const Param<T, S, D>&) {
  static_assert(S::rank >= 2, "loom::nn::init: fan-based initializers need a weight of rank >= 2");
  double receptive = 1;
  for (std::size_t i = 2; i < S::rank; ++i) receptive *= double(S::extents[i]);
  return {double(S::extents[1]) * receptive, double(S::extents[0]) * receptive};
}
template <class T, class S, class D>
void uniform(const Param<T, S, D>& p, Generator& g, double lo, double hi) {
  p.value().assign(loom::uniform<T, S, D>(g, lo, hi, p.value().dims()));  // drawn on the host, in row-major order
}
template <class T, class S, class D>
void normal(const Param<T, S, D>& p, Generator& g, double mean, double stddev) {
  p.value().assign(loom::normal<T, S, D>(g, mean, stddev, p.value().dims()));
}
template <class T, class S, class D>
void constant(const Param<T, S, D>& p, double value) { p.value().fill(static_cast<T>(value)); }

/// U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)).
template <class T, class S, class D>
void xavier_uniform(const Param<T, S, D>& p, Generator& g, double gain = 1) {
  const auto [fi, fo] = fans(p);
  const double b = gain * std::sqrt(6.0 / (fi + fo));
  uniform(p, g, -b, b);
}
/// N(0, s^2), s = gain * sqrt(2 / (fan_in + fan_out)).
template <class T, class S, class D>
void xavier_normal(const Param<T, S, D>& p, Generator& g, double gain = 1) {
  const auto [fi, fo] = fans(p);
  normal(p, g, 0, gain * std::sqrt(2.0 / (fi + fo)));
}
/// U(-b, b), b = sqrt(6 / ((1 + a^2) fan_in)) (a: leaky-ReLU slope; a = sqrt(5) is PyTorch's Linear default).
template <class T, class S, class D>
void kaiming_uniform(const Param<T, S, D>& p, Generator& g, double a = 0) {
  const double b = std::sqrt(6.0 / ((1 + a * a) * fans(p).first));
  uniform(p, g, -b, b);
}
/// N(0, s^2), s = sqrt(2 / ((1 + a^2) fan_in)).
template <class T, class S, class D>
void kaiming_normal(const Param<T, S, D>& p, Generator& g, double a = 0) {
  normal(p, g, 0, std::sqrt(2.0 / ((1 + a * a) * fans(p).first)));
}

}  // namespace loom::nn::init

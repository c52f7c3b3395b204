// loom/nn/conv.hpp — Conv2d and pooling layers. Channel counts chain through Sequential's check;
// spatial extents flow through static shapes into Flatten/Linear.
#pragma once
#include "../ops/conv.hpp"
#include "../ops/reduce.hpp"
#include "layers.hpp"

namespace loom::nn {

/// 2-D convolution, NCHW, weight [Cout, Cin, K, K] (PyTorch's layout and default init:
/// U(-1/sqrt(Cin*K*K), 1/sqrt(Cin*K*K)) for weight and bias).
template <std::size_t Cin, std::size_t Cout, std::size_t K, std::size_t Stride = 1, std::size_t Pad = 0,
          bool Bias = true, class T = float, class D = cpu>
struct Conv2d {
  static constexpr std::size_t in_features = Cin, out_features = Cout;
  static constexpr std::size_t num_params = Cout * Cin * K * K + (Bias ? Cout : 0);
  static constexpr std::string_view name = "Conv2d";
  template <class D2>
  using on_device = Conv2d<Cin, Cout, K, Stride, Pad, Bias, T, D2>;
  Param<T, Shape<Cout, Cin, K, K>, D> weight;
  Param<T, Shape<Cout>, D> bias;

  explicit Conv2d(Generator& g) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(Cin * K * K));
    weight.value().assign(uniform<T, Shape<Cout, Cin, K, K>, D>(g, -bound, bound));
    if constexpr (Bias) bias.value().assign(uniform<T, Shape<Cout>, D>(g, -bound, bound));
  }
  template <Expression X>
  auto operator()(const X& x) const {
    auto y = conv2d<Stride, Pad>(x, weight);
    if constexpr (Bias) return y + reshape<Shape<Cout, 1, 1>>(bias);
    else return y;
  }
  template <class F>
  void visit(F&& f, const std::string& prefix) const {
    f(prefix + "weight", weight);
    if constexpr (Bias) f(prefix + "bias", bias);
  }
  template <class OutShape>
  static constexpr std::size_t flops() { return 2 * Cin * K * K * Cout * OutShape::extents[2] * OutShape::extents[3]; }
};

namespace fn {
template <std::size_t K, std::size_t S>
struct MaxPool {
  static constexpr std::string_view name = "MaxPool2d";
  auto operator()(const auto& x) const { return max_pool2d<K, S>(x); }
};
template <std::size_t K, std::size_t S>
struct AvgPool {
  static constexpr std::string_view name = "AvgPool2d";
  auto operator()(const auto& x) const { return avg_pool2d<K, S>(x); }
};
struct GlobalAvgPool {
  static constexpr std::string_view name = "GlobalAvgPool";
  auto operator()(const auto& x) const { return mean<2, 3>(x); }
};
}  // namespace fn

template <std::size_t K, std::size_t Stride = K>
using MaxPool2d = Activation<fn::MaxPool<K, Stride>>;
template <std::size_t K, std::size_t Stride = K>
using AvgPool2d = Activation<fn::AvgPool<K, Stride>>;
/// [N, C, H, W] -> [N, C] (mean over the spatial axes).
using GlobalAvgPool = Activation<fn::GlobalAvgPool>;

}  // namespace loom::nn

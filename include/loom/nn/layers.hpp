// loom/nn/layers.hpp — Linear, activations, Flatten, Identity. A layer is a type; its call maps an
// expression to an expression; feature counts are checked by the compiler.
#pragma once
#include <cmath>

#include "../ops/elementwise.hpp"
#include "../ops/index.hpp"
#include "../ops/reduce.hpp"
#include "../ops/matmul.hpp"
#include "../ops/shape.hpp"
#include "init.hpp"
#include "module.hpp"

namespace loom::nn {

/// Feature count of a layer that keeps whatever it receives (activations, pooling).
inline constexpr std::size_t any_features = 0;
/// Feature count after a layer that changes what "features" means (Flatten: channels -> C*H*W);
/// the next layer checks the static shape it receives instead.
inline constexpr std::size_t unknown_features = static_cast<std::size_t>(-1);

namespace detail {
template <bool Ok, class Layer, std::size_t Got, std::size_t Expected>
struct check_linear_input {
  static_assert(Ok, "loom::nn::Linear: the input's last extent differs from the layer's input feature count "
                    "(check_linear_input<ok, Layer, Got, Expected> below)");
  static constexpr bool value = Ok;
};
}  // namespace detail

/// The module M with its parameters on device D (`M::on_device<D>`); modules without parameters are
/// the same on every device.
template <class M, class D>
struct to_device {
  using type = M;
};
template <class M, class D>
  requires requires { typename M::template on_device<D>; }
struct to_device<M, D> {
  using type = typename M::template on_device<D>;
};
template <class M, class D>
using on_device_t = typename to_device<M, D>::type;

/// y = x W^T + b with W [Out, In] (PyTorch's layout and default init: U(-1/sqrt(In), 1/sqrt(In))),
/// parameters on device D (initialized on the host from the generator, then moved).
template <std::size_t In, std::size_t Out, bool Bias = true, class T = float, class D = cpu>
struct Linear {
  static constexpr std::size_t in_features = In, out_features = Out;
  static constexpr std::size_t num_params = In * Out + (Bias ? Out : 0);
  static constexpr std::string_view name = "Linear";
  template <class D2>
  using on_device = Linear<In, Out, Bias, T, D2>;
  Param<T, Shape<Out, In>, D> weight;
  Param<T, Shape<Out>, D> bias;

  explicit Linear(Generator& g) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(In));
    weight.value().assign(uniform<T, Shape<Out, In>, D>(g, -bound, bound));
    if constexpr (Bias) bias.value().assign(uniform<T, Shape<Out>, D>(g, -bound, bound));
  }
  template <Expression X>
  auto operator()(const X& x) const {
    using S = shape_t<X>;
    constexpr std::size_t got = S::extents[S::rank - 1];
    constexpr bool ok = got == In || got == dyn;
    detail::check_linear_input<ok, Linear, got, In>{};
    if constexpr (ok) {
      if constexpr (Bias) return matmul(x, transpose(weight)) + bias;
      else return matmul(x, transpose(weight));
    }
  }
  template <class F>
  void visit(F&& f, const std::string& prefix) const {
    f(prefix + "weight", weight);
    if constexpr (Bias) f(prefix + "bias", bias);
  }
  /// Multiply-adds count twice, per sample.
  template <class OutShape>
  static constexpr std::size_t flops() { return 2 * In * Out; }
};

/// Rows of a [V, D] table picked by integer indices [...] -> [..., D] (PyTorch's nn.Embedding: weight
/// [num_embeddings, embedding_dim] drawn from N(0, 1)); its gradient is a scatter-add into the table.
template <std::size_t V, std::size_t D, class T = float, class Dev = cpu>
struct Embedding {
  static constexpr std::size_t in_features = any_features, out_features = D;
  static constexpr std::size_t num_params = V * D;
  static constexpr std::string_view name = "Embedding";
  template <class D2>
  using on_device = Embedding<V, D, T, D2>;
  Param<T, Shape<V, D>, Dev> weight;

  explicit Embedding(Generator& g) { init::normal(weight, g, 0, 1); }
  template <Expression I>
  auto operator()(const I& indices) const { return embedding(weight, indices); }
  template <class F>
  void visit(F&& f, const std::string& prefix) const { f(prefix + "weight", weight); }
  template <class OutShape>
  static constexpr std::size_t flops() { return 0; }
};

/// Layers without parameters that keep the feature count.
template <class Fn, std::size_t OutFeatures = any_features>
struct Activation {
  static constexpr std::size_t in_features = any_features, out_features = OutFeatures;
  static constexpr std::size_t num_params = 0;
  static constexpr std::string_view name = Fn::name;
  Activation() = default;
  explicit Activation(Generator&) {}
  template <Expression X>
  auto operator()(const X& x) const { return Fn{}(x); }
  template <class F>
  void visit(F&&, const std::string&) const {}
};

namespace fn {
struct Relu {
  static constexpr std::string_view name = "ReLU";
  auto operator()(const auto& x) const { return relu(x); }
};
struct Tanh {
  static constexpr std::string_view name = "Tanh";
  auto operator()(const auto& x) const { return tanh(x); }
};
struct Sigmoid {
  static constexpr std::string_view name = "Sigmoid";
  auto operator()(const auto& x) const { return sigmoid(x); }
};
struct Gelu {
  static constexpr std::string_view name = "GELU";
  auto operator()(const auto& x) const { return gelu(x); }
};
struct LeakyRelu {
  static constexpr std::string_view name = "LeakyReLU";
  auto operator()(const auto& x) const { return maximum(x, x * 0.01); }
};
struct Identity {
  static constexpr std::string_view name = "Identity";
  auto operator()(const auto& x) const { return x; }
};
struct Softmax {
  static constexpr std::string_view name = "Softmax";
  auto operator()(const auto& x) const { return loom::softmax<-1>(x); }
};
struct LogSoftmax {
  static constexpr std::string_view name = "LogSoftmax";
  auto operator()(const auto& x) const { return loom::log_softmax<-1>(x); }
};
struct Flatten {
  static constexpr std::string_view name = "Flatten";
  auto operator()(const auto& x) const { return loom::flatten(x); }
};
}  // namespace fn

using ReLU = Activation<fn::Relu>;
using Tanh = Activation<fn::Tanh>;
using Sigmoid = Activation<fn::Sigmoid>;
using GELU = Activation<fn::Gelu>;
using LeakyReLU = Activation<fn::LeakyRelu>;
using Identity = Activation<fn::Identity>;
/// Softmax / log-softmax over the last axis.
using Softmax = Activation<fn::Softmax>;
using LogSoftmax = Activation<fn::LogSoftmax>;
/// [B, d1, d2, ...] -> [B, d1 * d2 * ...]; the following Linear checks the computed count.
using Flatten = Activation<fn::Flatten, unknown_features>;

}  // namespace loom::nn

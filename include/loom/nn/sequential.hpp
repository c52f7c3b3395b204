// loom/nn/sequential.hpp — Sequential<Layers...>: layers applied in order. Consecutive layers whose
// feature counts do not chain are rejected by the compiler, naming both layers and both counts.
#pragma once
#include "../expr/let.hpp"
#include "layers.hpp"

namespace loom::nn {

namespace detail {
template <bool Ok, class Producer, class Consumer, std::size_t Produced, std::size_t Expected>
struct check_chain {
  static_assert(Ok, "loom::nn::Sequential: consecutive layers do not chain: the first produces a different "
                    "feature count than the next expects (check_chain<ok, Producer, Consumer, Produced, "
                    "Expected> below)");
  static constexpr bool value = Ok;
};

/// Walks the layers keeping the last known feature count and the layer that set it.
template <class Last, std::size_t Features, class... L>
struct chain {
  static constexpr bool ok = true;
};
template <class Last, std::size_t Features, class H, class... R>
struct chain<Last, Features, H, R...> {
  static constexpr bool here_ok = Features == any_features || Features == unknown_features ||
                                 H::in_features == any_features || H::in_features == Features;
  static constexpr bool here = check_chain<here_ok, Last, H, Features, H::in_features>::value;
  using NextLast = std::conditional_t<H::out_features == any_features, Last, H>;
  static constexpr std::size_t next = H::out_features == any_features ? Features : H::out_features;
  static constexpr bool ok = here && chain<NextLast, next, R...>::ok;
};
}  // namespace detail

template <class... L>
struct Sequential {
  static_assert(sizeof...(L) > 0, "loom::nn::Sequential: needs at least one layer");
  static constexpr bool chains = detail::chain<void, any_features, L...>::ok;
  static_assert(chains || !chains);  // instantiates the chain check with the class
  static constexpr std::size_t num_params = (L::num_params + ...);
  static constexpr std::size_t in_features = loom::detail::first_of<L...>::type::in_features;
  static constexpr std::size_t out_features = [] {
    std::size_t f = any_features;
    ((f = L::out_features == any_features ? f : L::out_features), ...);
    return f;
  }();
  static constexpr std::string_view name = "Sequential";
  /// The same network with its parameters on device D (layers that have no device form stay as
  /// they are; ops without a kernel on D are rejected when a program is compiled).
  template <class D>
  using on_device = Sequential<on_device_t<L, D>...>;
  loom::detail::Pack<L...> layers;

  explicit Sequential(Generator& g) : layers(L(g)...) {}
  template <std::size_t I>
  const auto& get() const { return loom::detail::get<I>(layers); }

  template <Expression X>
  auto operator()(const X& x) const {
    return apply<0>(x);
  }
  /// Training mode (dropout active, batch statistics) or eval mode, for every layer that has one.
  void train(bool on = true) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ([&](auto& layer) {
        if constexpr (requires { layer.set_training(on); }) layer.set_training(on);
        else if constexpr (requires { layer.train(on); }) layer.train(on);
      }(loom::detail::get<I>(layers)), ...);
    }(std::index_sequence_for<L...>{});
  }
  void eval() { train(false); }
  void set_training(bool on) { train(on); }

  template <class F>
  void visit(F&& f, const std::string& prefix) const {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (get<I>().visit(f, prefix + std::to_string(I) + "."), ...);
    }(std::index_sequence_for<L...>{});
  }
  template <class F>
  void visit_buffers(F&& f, const std::string& prefix) const {
    [&]<std::size_t... I>(std::index_sequence<I...>) { (visit_buffers_of<I>(f, prefix), ...); }(std::index_sequence_for<L...>{});
  }
  template <std::size_t I, class F>
  void visit_buffers_of(F& f, const std::string& prefix) const {
    if constexpr (requires { get<I>().visit_buffers(f, prefix); }) get<I>().visit_buffers(f, prefix + std::to_string(I) + ".");
  }

  /// A per-layer table for an input of static shape In (first extent = batch, may be dyn): output
  /// shape, parameters, FLOPs per sample (multiply-add = 2; other layers: one per output element).
  template <ShapeType In, class T = float>
  static std::string summary() {
    std::string out = "layer                output shape          params        FLOPs/sample\n";
    std::size_t total_flops = 0;
    auto row = [&](std::string_view name, const std::string& shape, std::size_t params, std::size_t flops) {
      std::string line(name);
      line.resize(21, ' ');
      line += shape;
      line.resize(43, ' ');
      const auto p = std::to_string(params), f = std::to_string(flops);
      line += std::string(p.size() < 12 ? 12 - p.size() : 0, ' ') + p + std::string(f.size() < 20 ? 20 - f.size() : 0, ' ') + f;
      out += line + "\n";
    };
    walk<0, Input<T, In>>(row, total_flops);
    row("total", "", num_params, total_flops);
    return out;
  }

  /// FLOPs per sample of the whole stack for an input of static shape In (as summary() counts them).
  template <ShapeType In, class T = float>
  static constexpr std::size_t flops_for() { return flops_from<0, Input<T, In>>(); }

 private:
  template <std::size_t I, class X>
  static constexpr std::size_t flops_from() {
    if constexpr (I == sizeof...(L)) {
      return 0;
    } else {
      using Layer = std::remove_cvref_t<decltype(std::declval<const Sequential&>().template get<I>())>;
      using Y = decltype(std::declval<const Layer&>()(std::declval<const X&>()));
      return layer_flops<Layer, X, shape_t<Y>>() + flops_from<I + 1, Y>();
    }
  }
  template <class Layer, class X, class S>
  static constexpr std::size_t layer_flops() {
    if constexpr (requires { Layer::template flops_of<X>(); }) {
      return Layer::template flops_of<X>();
    } else if constexpr (requires { Layer::template flops<S>(); }) {
      return Layer::template flops<S>();
    } else {
      std::size_t per_sample = 1;
      for (std::size_t i = 1; i < S::rank; ++i) per_sample *= S::extents[i];
      return per_sample;
    }
  }
  template <std::size_t I, class X, class Row>
  static void walk(Row& row, std::size_t& total) {
    if constexpr (I < sizeof...(L)) {
      using Layer = std::remove_cvref_t<decltype(std::declval<const Sequential&>().template get<I>())>;
      using Y = decltype(std::declval<const Layer&>()(std::declval<const X&>()));
      using S = shape_t<Y>;
      constexpr std::size_t flops = layer_flops<Layer, X, S>();
      total += flops;
      row(Layer::name, shape_string<S>(), Layer::num_params, flops);
      walk<I + 1, Y>(row, total);
    }
  }
  template <std::size_t I, class X>
  auto apply(const X& x) const {
    if constexpr (I == sizeof...(L)) return x;
    else return apply<I + 1>(get<I>()(x));
  }
};

namespace detail {
template <bool Ok, class In, class Out>
struct check_residual {
  static_assert(Ok, "loom::nn::Residual: the body changes the shape, so it cannot be added to its input (see "
                    "check_residual<ok, Input, Output> below)");
  static constexpr bool value = Ok;
};
}  // namespace detail

/// y = x + body(x) with body = Sequential<L...>; the body must keep the shape.
template <class... L>
struct Residual {
  using Body = Sequential<L...>;
  static constexpr std::size_t in_features = Body::in_features, out_features = Body::out_features;
  static constexpr std::size_t num_params = Body::num_params;
  static constexpr std::string_view name = "Residual";
  template <class D>
  using on_device = Residual<on_device_t<L, D>...>;
  Body body;
  explicit Residual(Generator& g) : body(g) {}
  /// x is read twice, so it is a `let`: the expression type holds it once (stacks of residual blocks
  /// grow linearly in node count).
  template <Expression X>
  auto operator()(const X& x) const {
    using Y = decltype(body(x));
    constexpr bool ok = std::is_same_v<shape_t<X>, shape_t<Y>>;
    detail::check_residual<ok, shape_t<X>, shape_t<Y>>{};
    if constexpr (ok) return let(x, [&](auto r) { return r + body(r); });
  }
  void train(bool on = true) { body.train(on); }
  void set_training(bool on) { body.train(on); }
  template <class F>
  void visit(F&& f, const std::string& prefix) const { body.visit(f, prefix + "body."); }
  template <class F>
  void visit_buffers(F&& f, const std::string& prefix) const { body.visit_buffers(f, prefix + "body."); }
  /// The body's FLOPs plus the addition, per sample.
  template <class X>
  static constexpr std::size_t flops_of() {
    std::size_t per_sample = 1;
    for (std::size_t i = 1; i < shape_t<X>::rank; ++i) per_sample *= shape_t<X>::extents[i];
    return Body::template flops_for<shape_t<X>, value_t<X>>() + per_sample;
  }
};

}  // namespace loom::nn

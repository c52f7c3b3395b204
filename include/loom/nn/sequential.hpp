// loom/nn/sequential.hpp — Sequential<Layers...>: layers applied in order. Consecutive layers whose
// feature counts do not chain are rejected by the compiler, naming both layers and both counts.
#pragma once
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

 private:
  template <std::size_t I, class X>
  auto apply(const X& x) const {
    if constexpr (I == sizeof...(L)) return x;
    else return apply<I + 1>(get<I>()(x));
  }
};

}  // namespace loom::nn

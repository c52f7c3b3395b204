// loom/nn/recurrent.hpp — RNN, LSTM and GRU modules over loom::scan, with PyTorch's parameter names
// (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, ...), shapes, gate orders and initialization
// (every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))), so state dicts are interchangeable.
//
//   auto [out, state] = lstm(x, h0);   // x [T, B, I] (or [B, T, I] with BatchFirst), h0 [Layers, B, S]
//
// out is the last layer's h for every step ([T, B, H] or [B, T, H]); state is every layer's final state
// [Layers, B, S] (S = 2H for the LSTM: h then c; S = H otherwise). Feed a detached state as the next
// batch's h0 for truncated backpropagation through time.
#pragma once
#include <array>
#include <cmath>

#include "../ops/recurrent.hpp"
#include "../ops/shape.hpp"
#include "module.hpp"

namespace loom::nn {

template <class X, class State>
struct RecurrentOutput {
  X out;
  State state;
};

template <class Cell, std::size_t I, std::size_t H, std::size_t Layers = 1, bool BatchFirst = false, class T = float>
struct Recurrent {
  static_assert(Layers >= 1, "loom::nn: a recurrent module needs at least one layer");
  static constexpr std::size_t G = Cell::gates, S = Cell::state * H;
  static constexpr std::size_t in_features = I, out_features = H, state_size = S, num_layers = Layers;
  static constexpr bool batch_first = BatchFirst;
  static constexpr std::size_t num_params = G * H * (I + H + 2) + (Layers - 1) * G * H * (2 * H + 2);
  static constexpr std::string_view name = Cell::name;

  template <std::size_t In>
  struct Layer {
    Param<T, Shape<G * H, In>> weight_ih;
    Param<T, Shape<G * H, H>> weight_hh;
    Param<T, Shape<G * H>> bias_ih, bias_hh;
    void init(Generator& g) {
      const double k = 1.0 / std::sqrt(double(H));
      weight_ih.value().assign(uniform<T, Shape<G * H, In>>(g, -k, k));
      weight_hh.value().assign(uniform<T, Shape<G * H, H>>(g, -k, k));
      bias_ih.value().assign(uniform<T, Shape<G * H>>(g, -k, k));
      bias_hh.value().assign(uniform<T, Shape<G * H>>(g, -k, k));
    }
    template <class F>
    void visit(F&& f, const std::string& prefix, std::size_t l) const {
      const std::string n = std::to_string(l);
      f(prefix + "weight_ih_l" + n, weight_ih);
      f(prefix + "weight_hh_l" + n, weight_hh);
      f(prefix + "bias_ih_l" + n, bias_ih);
      f(prefix + "bias_hh_l" + n, bias_hh);
    }
  };
  Layer<I> first;
  std::array<Layer<H>, Layers - 1> rest;

  explicit Recurrent(Generator& g) {
    first.init(g);
    for (auto& l : rest) l.init(g);
  }
  template <class F>
  void visit(F&& f, const std::string& prefix) const {
    first.visit(f, prefix, 0);
    for (std::size_t l = 0; l + 1 < Layers; ++l) rest[l].visit(f, prefix, l + 1);
  }

  /// x [T, B, I] (BatchFirst: [B, T, I]) and h0 [Layers, B, S].
  template <Expression X, Expression H0>
  auto operator()(const X& x, const H0& h0) const {
    static_assert(shape_t<X>::rank == 3 && shape_t<H0>::rank == 3,
                  "loom::nn: a recurrent module takes x [T, B, I] and h0 [Layers, B, S]");
    if constexpr (BatchFirst) {
      auto r = run<0>(permute<1, 0, 2>(x), h0);
      return RecurrentOutput<decltype(permute<1, 0, 2>(r.out)), decltype(r.state)>{permute<1, 0, 2>(r.out), r.state};
    } else {
      return run<0>(x, h0);
    }
  }

 private:
  template <std::size_t L>
  const auto& layer() const {
    if constexpr (L == 0) return first;
    else return rest[L - 1];
  }
  template <std::size_t L, class X, class H0, class... Last>
  auto run(const X& x, const H0& h0, const Last&... last) const {
    const auto& p = layer<L>();
    auto states = scan<Cell>(x, reshape<Shape<dyn, S>>(narrow<0, L, 1>(h0)), p.weight_ih, p.weight_hh, p.bias_ih, p.bias_hh);
    auto h = narrow<2, 0, H>(states);
    auto final_state = slice<0>(states, -1, std::numeric_limits<std::ptrdiff_t>::max());
    if constexpr (L + 1 == Layers) {
      auto state = concat<0>(last..., final_state);
      return RecurrentOutput<decltype(h), decltype(state)>{h, state};
    } else {
      return run<L + 1>(h, h0, last..., final_state);
    }
  }
};

template <std::size_t I, std::size_t H, std::size_t Layers = 1, bool BatchFirst = false, class T = float>
using RNN = Recurrent<cells::RNN<false>, I, H, Layers, BatchFirst, T>;
template <std::size_t I, std::size_t H, std::size_t Layers = 1, bool BatchFirst = false, class T = float>
using RNNReLU = Recurrent<cells::RNN<true>, I, H, Layers, BatchFirst, T>;
template <std::size_t I, std::size_t H, std::size_t Layers = 1, bool BatchFirst = false, class T = float>
using LSTM = Recurrent<cells::LSTM, I, H, Layers, BatchFirst, T>;
template <std::size_t I, std::size_t H, std::size_t Layers = 1, bool BatchFirst = false, class T = float>
using GRU = Recurrent<cells::GRU, I, H, Layers, BatchFirst, T>;

}  // namespace loom::nn

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

#include "../expr/let.hpp"
#include "../ops/elementwise.hpp"
#include "../ops/matmul.hpp"
#include "../ops/recurrent.hpp"
#include "../ops/scan_cell.hpp"
#include "../ops/shape.hpp"
#include "module.hpp"

namespace loom::nn {

template <class X, class State>
struct RecurrentOutput {
  X out;
  State state;
};

/// One layer's (or one cell's) weights in PyTorch's layout: weight_ih [G*H, In], weight_hh [G*H, H],
/// bias_ih, bias_hh [G*H], all ~ U(-1/sqrt(H), 1/sqrt(H)).
template <std::size_t G, std::size_t In, std::size_t H, class T, class D = cpu>
struct CellParams {
  Param<T, Shape<G * H, In>, D> weight_ih;
  Param<T, Shape<G * H, H>, D> weight_hh;
  Param<T, Shape<G * H>, D> bias_ih, bias_hh;
  void init(Generator& g) {
    const double k = 1.0 / std::sqrt(double(H));
    weight_ih.value().assign(uniform<T, Shape<G * H, In>, D>(g, -k, k));
    weight_hh.value().assign(uniform<T, Shape<G * H, H>, D>(g, -k, k));
    bias_ih.value().assign(uniform<T, Shape<G * H>, D>(g, -k, k));
    bias_hh.value().assign(uniform<T, Shape<G * H>, D>(g, -k, k));
  }
  /// Names as PyTorch: prefix + "weight_ih" + suffix ("_l0" in a multi-layer module, "" in a cell).
  template <class F>
  void visit(F&& f, const std::string& prefix, const std::string& suffix) const {
    f(prefix + "weight_ih" + suffix, weight_ih);
    f(prefix + "weight_hh" + suffix, weight_hh);
    f(prefix + "bias_ih" + suffix, bias_ih);
    f(prefix + "bias_hh" + suffix, bias_hh);
  }
};

template <class Cell, std::size_t I, std::size_t H, std::size_t Layers = 1, bool BatchFirst = false, class T = float,
          class D = cpu>
struct Recurrent {
  static_assert(Layers >= 1, "loom::nn: a recurrent module needs at least one layer");
  static constexpr std::size_t G = Cell::gates, S = Cell::state * H;
  static constexpr std::size_t in_features = I, out_features = H, state_size = S, num_layers = Layers;
  static constexpr bool batch_first = BatchFirst;
  static constexpr std::size_t num_params = G * H * (I + H + 2) + (Layers - 1) * G * H * (2 * H + 2);
  static constexpr std::string_view name = Cell::name;
  template <class D2>
  using on_device = Recurrent<Cell, I, H, Layers, BatchFirst, T, D2>;

  template <std::size_t In>
  using Layer = CellParams<G, In, H, T, D>;
  Layer<I> first;
  std::array<Layer<H>, Layers - 1> rest;

  explicit Recurrent(Generator& g) {
    first.init(g);
    for (auto& l : rest) l.init(g);
  }
  template <class F>
  void visit(F&& f, const std::string& prefix) const {
    first.visit(f, prefix, "_l0");
    for (std::size_t l = 0; l + 1 < Layers; ++l) rest[l].visit(f, prefix, "_l" + std::to_string(l + 1));
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

template <std::size_t I, std::size_t H, std::size_t Layers = 1, bool BatchFirst = false, class T = float, class D = cpu>
using RNN = Recurrent<cells::RNN<false>, I, H, Layers, BatchFirst, T, D>;
template <std::size_t I, std::size_t H, std::size_t Layers = 1, bool BatchFirst = false, class T = float, class D = cpu>
using RNNReLU = Recurrent<cells::RNN<true>, I, H, Layers, BatchFirst, T, D>;
template <std::size_t I, std::size_t H, std::size_t Layers = 1, bool BatchFirst = false, class T = float, class D = cpu>
using LSTM = Recurrent<cells::LSTM, I, H, Layers, BatchFirst, T, D>;
template <std::size_t I, std::size_t H, std::size_t Layers = 1, bool BatchFirst = false, class T = float, class D = cpu>
using GRU = Recurrent<cells::GRU, I, H, Layers, BatchFirst, T, D>;


/// One step of a recurrent cell as an expression, with PyTorch's RNNCell / LSTMCell / GRUCell parameter
/// names (weight_ih, weight_hh, bias_ih, bias_hh), layouts, gate orders and init:
///   auto h1 = cell(x, h);          // x [B, I], state [B, S] -> next state [B, S]
///   auto hs = cell.scan(x_seq, h0) // the cell iterated over x_seq [T, B, I] (loom::scan): [T, B, S]
/// The LSTM cell's state is h and c side by side (S = 2H), as in nn::LSTM; h_of / c_of take them apart.
/// nn::RNN/LSTM/GRU run the same math through hand-fused kernels; cells are for custom loops and as
/// the reference those kernels are checked against.
template <class Kind, std::size_t I, std::size_t H, class T = float, class D = cpu>
struct RecurrentCell : CellParams<Kind::gates, I, H, T, D> {
  static constexpr std::size_t G = Kind::gates, S = Kind::state * H;
  static constexpr std::size_t in_features = I, out_features = H, state_size = S;
  static constexpr std::size_t num_params = G * H * (I + H + 2);
  static constexpr std::string_view name = Kind::name;
  template <class D2>
  using on_device = RecurrentCell<Kind, I, H, T, D2>;
  explicit RecurrentCell(Generator& g) { this->init(g); }
  template <class F>
  void visit(F&& f, const std::string& prefix) const { CellParams<G, I, H, T, D>::visit(f, prefix, ""); }

  template <Expression X, Expression St>
  auto operator()(const X& x, const St& state) const {
    auto gx = matmul(x, transpose(this->weight_ih)) + this->bias_ih;
    auto gh = [&](const auto& h) { return matmul(h, transpose(this->weight_hh)) + this->bias_hh; };
    if constexpr (std::is_same_v<Kind, cells::RNN<false>>) {
      return tanh(gx + gh(state));
    } else if constexpr (std::is_same_v<Kind, cells::RNN<true>>) {
      return relu(gx + gh(state));
    } else if constexpr (std::is_same_v<Kind, cells::LSTM>) {
      return let(state, [&](auto s) {
        return let(gx + gh(h_of(s)), [&](auto g) {
          auto i = sigmoid(narrow<1, 0, H>(g)), f = sigmoid(narrow<1, H, H>(g));
          auto c = f * c_of(s) + i * tanh(narrow<1, 2 * H, H>(g));
          return let(c, [&](auto c1) { return concat<1>(sigmoid(narrow<1, 3 * H, H>(g)) * tanh(c1), c1); });
        });
      });
    } else {
      static_assert(std::is_same_v<Kind, cells::GRU>, "loom::nn::RecurrentCell: unknown cell");
      return let(state, [&](auto h) {
        return let(gx, [&](auto a) {
          return let(gh(h), [&](auto b) {
            auto r = sigmoid(narrow<1, 0, H>(a) + narrow<1, 0, H>(b));
            auto n = tanh(narrow<1, 2 * H, H>(a) + r * narrow<1, 2 * H, H>(b));
            return let(sigmoid(narrow<1, H, H>(a) + narrow<1, H, H>(b)), [&](auto z) { return (T(1) - z) * n + z * h; });
          });
        });
      });
    }
  }
  template <Expression St>
  static auto h_of(const St& s) { return narrow<1, 0, H>(s); }
  template <Expression St>
  static auto c_of(const St& s) {
    static_assert(std::is_same_v<Kind, cells::LSTM>, "loom::nn: only the LSTM cell has a c state");
    return narrow<1, H, H>(s);
  }
  /// The cell over x [T, B, I] from h0 [B, S]: every state [T, B, S].
  template <Expression X, Expression H0>
  auto scan(const X& x, const H0& h0) const {
    return loom::scan([c = *this](const auto& xt, const auto& h) { return c(xt, h); }, x, h0);
  }
};

template <std::size_t I, std::size_t H, class T = float, class D = cpu>
using RNNCell = RecurrentCell<cells::RNN<false>, I, H, T, D>;
template <std::size_t I, std::size_t H, class T = float, class D = cpu>
using RNNReLUCell = RecurrentCell<cells::RNN<true>, I, H, T, D>;
template <std::size_t I, std::size_t H, class T = float, class D = cpu>
using LSTMCell = RecurrentCell<cells::LSTM, I, H, T, D>;
template <std::size_t I, std::size_t H, class T = float, class D = cpu>
using GRUCell = RecurrentCell<cells::GRU, I, H, T, D>;

}  // namespace loom::nn

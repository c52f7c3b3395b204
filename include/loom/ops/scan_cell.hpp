// loom/ops/scan_cell.hpp — scan over a cell written as an expression: h[t] = cell(x[t], h[t-1]).
// The cell graph is a static type compiled once into two sub-programs (the step, and the step's
// vector-Jacobian product); the time loop runs when the program runs, so compile time does not depend
// on the sequence length. The forward keeps every state (the op's output); the backward walks time in
// reverse and recomputes each step's activations from the stored state before back-propagating
// through it (the states are what BPTT must keep; activations are recomputed, one step at a time).
// Parameters the cell reads receive their gradients directly (the sub-program accumulates into them).
//
// For the built-in cells (RNN, LSTM, GRU) `scan<Cell>(x, h0, weights...)` (ops/recurrent.hpp) is a
// hand-fused kernel and faster; this one runs any cell a user writes.
#pragma once
#include <memory>

#include "../expr/program.hpp"
#include "reduce.hpp"

namespace loom {

namespace detail {
template <bool Ok, class CellOut, class StateShape>
struct check_scan_cell {
  static_assert(Ok, "loom::scan: the cell must return a [batch, S] expression where the state is [batch, S] "
                    "(see check_scan_cell below: cell output, state)");
};
}  // namespace detail

namespace ops {

template <class Cell, Dtype T, std::size_t I, std::size_t S, class D = cpu>
struct ScanCell {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = true;
  static constexpr std::string_view name = "scan_cell";
  template <class SX, class SH>
  using shape = Shape<SX::extents[0], SX::extents[1], S>;

  using XVar = Variable<T, Shape<dyn, I>, D>;
  using HVar = Variable<T, Shape<dyn, S>, D>;
  using Step = decltype(std::declval<const Cell&>()(std::declval<XVar>(), std::declval<HVar>()));
  using Seed = Input<T, Shape<dyn, S>, D>;
  /// One cell step and its vector-Jacobian product (sum(step * seed), differentiated).
  struct Runner {
    Cell cell;
    XVar x;
    HVar h;
    Seed seed;
    decltype(compile(std::declval<Step>())) step;
    decltype(compile(sum(std::declval<Step>() * std::declval<Seed>()))) vjp;
    explicit Runner(Cell c) : cell(std::move(c)), step(compile(cell(x, h))), vjp(compile(sum(cell(x, h) * seed))) {}
  };
  std::shared_ptr<Runner> run;

  Dims<3> dims(const Dims<3>& x, const Dims<2>& h0) const {
    if (x[2] != I || h0[0] != x[1] || h0[1] != S)
      throw shape_error("loom::scan: input " + to_string(x) + " and initial state " + to_string(h0) +
                        " do not fit a cell taking [B, " + std::to_string(I) + "] and [B, " + std::to_string(S) + "]");
    return {x[0], x[1], S};
  }
  /// Two state-gradient carries and the step's incoming gradient [B, S] x 3, a dummy gradient for x [B, I].
  std::size_t scratch(const Dims<3>& x, const Dims<2>&) const { return 3 * x[1] * S + x[1] * I; }

  static Tensor<T, Shape<dyn, dyn>, D> wrap(const detail::View<T, 2>& v) {
    return Tensor<T, Shape<dyn, dyn>, D>::wrap(v.data, v.dims, v.strides, nullptr);
  }
  static Tensor<T, Shape<dyn, dyn>, D> wrap(T* p, std::size_t r, std::size_t c) {
    return Tensor<T, Shape<dyn, dyn>, D>::wrap(p, {r, c}, {static_cast<std::ptrdiff_t>(c), 1}, nullptr);
  }
  static detail::View<T, 2> rows(T* p, std::size_t r, std::size_t c) { return {p, {r, c}, {static_cast<std::ptrdiff_t>(c), 1}}; }
  /// Copies (or adds) between views on the program's device (Dev: whose kernels run the program).
  template <class Dev, backend::Mode M>
  static void move(const detail::View<T, 2>& dst, const detail::View<T, 2>& src) {
    backend::Exec<Dev>::template apply<M>(dst, src);
  }
  static detail::View<T, 2> step_of(const detail::View<T, 3>& v, std::size_t t) {
    return {v.data + static_cast<std::ptrdiff_t>(t) * v.strides[0], {v.dims[1], v.dims[2]}, {v.strides[1], v.strides[2]}};
  }

  // The sub-programs run on D; the steps between them are strided copies on the program's device.
  template <class Dev>
  void forward(on<Dev>, const detail::View<T, 3>& out, const detail::View<T, 3>& x, const detail::View<T, 2>& h0,
               T* scratch) const {
    const std::size_t Tn = x.dims[0], B = x.dims[1];
    auto none_x = wrap(scratch + 3 * B * S, B, I), none_h = wrap(scratch, B, S);
    for (std::size_t t = 0; t < Tn; ++t) {
      run->x.bind(wrap(step_of(x, t)), none_x);
      run->h.bind(t ? wrap(step_of(out, t - 1)) : wrap(h0), none_h);
      const auto y = run->step.forward();
      move<Dev, backend::Mode::assign>(step_of(out, t), detail::View<T, 2>{y.data(), y.dims(), y.strides()});
    }
  }

  template <class Dev>
  void backward(on<Dev>, const detail::View<T, 3>& g, const detail::View<T, 3>& out,
                const std::pair<detail::View<T, 3>, detail::View<T, 3>>& x,
                const std::pair<detail::View<T, 2>, detail::View<T, 2>>& h0, T* scratch) const {
    const std::size_t Tn = x.first.dims[0], B = x.first.dims[1];
    T *carry = scratch, *prev = carry + B * S, *seed = prev + B * S;
    auto none_x = wrap(seed + B * S, B, I);
    const detail::View<T, 2> seed_v{seed, {B, S}, {static_cast<std::ptrdiff_t>(S), 1}};
    detail::DeviceMemory<D>::fill(carry, B * S, T(0));
    for (std::size_t t = Tn; t-- > 0;) {
      // the gradient reaching h[t]: from the output at t and from step t + 1
      move<Dev, backend::Mode::assign>(seed_v, step_of(g, t));
      move<Dev, backend::Mode::add>(seed_v, rows(carry, B, S));
      detail::DeviceMemory<D>::fill(prev, B * S, T(0));
      run->x.bind(wrap(step_of(x.first, t)), x.second.data ? wrap(step_of(x.second, t)) : none_x);
      run->h.bind(t ? wrap(step_of(out, t - 1)) : wrap(h0.first), wrap(prev, B, S));
      run->seed.bind(wrap(seed_v));
      run->vjp.forward();
      run->vjp.backward();  // adds into dx[t], d h[t-1] (prev) and the cell's parameters
      std::swap(carry, prev);
    }
    if (h0.second.data) move<Dev, backend::Mode::add>(h0.second, rows(carry, B, S));
  }
};

}  // namespace ops

/// h[t] = cell(x[t], h[t-1]) over x [T, B, I] from h0 [B, S]; returns every state [T, B, S]. `cell` is
/// any callable taking (x_t [B, I], h [B, S]) expressions and returning a [B, S] expression (it may
/// read parameters: they receive their gradients). Differentiable in x, h0 and the cell's parameters.
template <class Cell, Expression X, Expression H0>
  requires(!Expression<Cell>)
auto scan(Cell cell, const X& x, const H0& h0) {
  using SX = shape_t<X>;
  using SH = shape_t<H0>;
  static_assert(SX::rank == 3 && SH::rank == 2, "loom::scan: x must be [T, B, I] and h0 [B, S]");
  static_assert(SX::extents[2] != dyn && SH::extents[1] != dyn,
                "loom::scan: the input width I and the state width S must be static");
  using T = value_t<X>;
  using Op = ops::ScanCell<Cell, T, SX::extents[2], SH::extents[1], device_t<X>>;
  using Out = shape_t<typename Op::Step>;
  constexpr bool ok = Out::rank == 2 && Out::extents[1] == SH::extents[1];
  detail::check_scan_cell<ok, Out, SH>{};
  if constexpr (ok) return make_node(Op{std::make_shared<typename Op::Runner>(std::move(cell))}, x, h0);
}

}  // namespace loom

// loom/ops/recurrent.hpp — scan: a recurrent cell iterated over a run-time (`dyn`) time axis. The
// cell is a static type (its step is compiled once); the time loop runs when the program runs, so
// compile time does not depend on the sequence length. The forward keeps what backpropagation through
// time needs (every state, plus each step's saved activations); the backward walks time in reverse.
//
//   pre_x[t] = x[t] W_ih^T + b_ih     (all steps, before the loop)
//   pre_h[t] = h[t-1] W_hh^T + b_hh   (one GEMM per step)
//   state[t] = cell(pre_x[t], pre_h[t], state[t-1])
//
// The op returns every state [T, B, S]; the state of an LSTM is (h, c) side by side (S = 2H), of an RNN
// or GRU just h (S = H). The output sequence is the h part, the final state the last step: both views.
// Cells (gate orders as PyTorch): RNN tanh / relu; LSTM i, f, g, o; GRU r, z, n.
#pragma once
#include <cmath>

#include "../backend/cpu/gemm.hpp"
#include "op.hpp"

namespace loom {

namespace cells {

template <class T>
LOOM_HOST_DEVICE T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

// Each cell computes feature j of one batch row (px, ph: that row's G*H pre-activations; prev, next:
// its state; sv: its saved activations), so a step is a loop on the host or a kernel on a device.

/// h' = act(pre_x + pre_h).
template <bool Relu>
struct RNN {
  static constexpr std::string_view name = Relu ? "rnn_relu" : "rnn_tanh";
  static constexpr std::size_t gates = 1, state = 1, saved = 0;  // in units of H
  template <class T>
  LOOM_HOST_DEVICE static void forward(std::size_t, std::size_t j, const T* px, const T* ph, const T*, T* next, T*) {
    const T a = px[j] + ph[j];
    next[j] = Relu ? (a > T(0) ? a : T(0)) : std::tanh(a);
  }
  template <class T>
  LOOM_HOST_DEVICE static void backward(std::size_t, std::size_t j, const T* dn, const T*, const T* next, const T*, T* dpx,
                                        T* dph, T* dprev) {
    const T d = dn[j] * (Relu ? T(next[j] > T(0)) : T(1) - next[j] * next[j]);
    dpx[j] = d, dph[j] = d, dprev[j] = T(0);
  }
};

/// c' = f * c + i * g,  h' = o * tanh(c')  with i, f, o = sigmoid, g = tanh of (pre_x + pre_h).
struct LSTM {
  static constexpr std::string_view name = "lstm";
  static constexpr std::size_t gates = 4, state = 2, saved = 4;
  template <class T>
  LOOM_HOST_DEVICE static void forward(std::size_t H, std::size_t j, const T* px, const T* ph, const T* prev, T* next, T* sv) {
    const T i = sigmoid(px[j] + ph[j]), f = sigmoid(px[H + j] + ph[H + j]);
    const T g = std::tanh(px[2 * H + j] + ph[2 * H + j]), o = sigmoid(px[3 * H + j] + ph[3 * H + j]);
    const T c = f * prev[H + j] + i * g;
    next[H + j] = c;
    next[j] = o * std::tanh(c);
    sv[j] = i, sv[H + j] = f, sv[2 * H + j] = g, sv[3 * H + j] = o;
  }
  template <class T>
  LOOM_HOST_DEVICE static void backward(std::size_t H, std::size_t j, const T* dn, const T* prev, const T* next, const T* sv,
                                        T* dpx, T* dph, T* dprev) {
    const T i = sv[j], f = sv[H + j], g = sv[2 * H + j], o = sv[3 * H + j], tc = std::tanh(next[H + j]);
    const T dc = dn[H + j] + dn[j] * o * (T(1) - tc * tc);
    const T di = dc * g * i * (T(1) - i), df = dc * prev[H + j] * f * (T(1) - f);
    const T dg = dc * i * (T(1) - g * g), dout = dn[j] * tc * o * (T(1) - o);
    dpx[j] = dph[j] = di, dpx[H + j] = dph[H + j] = df, dpx[2 * H + j] = dph[2 * H + j] = dg;
    dpx[3 * H + j] = dph[3 * H + j] = dout;
    dprev[j] = T(0), dprev[H + j] = dc * f;
  }
};

/// r, z = sigmoid(pre_x + pre_h); n = tanh(pre_x_n + r * pre_h_n); h' = (1 - z) * n + z * h.
struct GRU {
  static constexpr std::string_view name = "gru";
  static constexpr std::size_t gates = 3, state = 1, saved = 4;
  template <class T>
  LOOM_HOST_DEVICE static void forward(std::size_t H, std::size_t j, const T* px, const T* ph, const T* prev, T* next, T* sv) {
    const T r = sigmoid(px[j] + ph[j]), z = sigmoid(px[H + j] + ph[H + j]);
    const T n = std::tanh(px[2 * H + j] + r * ph[2 * H + j]);
    next[j] = (T(1) - z) * n + z * prev[j];
    sv[j] = r, sv[H + j] = z, sv[2 * H + j] = n, sv[3 * H + j] = ph[2 * H + j];
  }
  template <class T>
  LOOM_HOST_DEVICE static void backward(std::size_t H, std::size_t j, const T* dn, const T* prev, const T*, const T* sv,
                                        T* dpx, T* dph, T* dprev) {
    const T r = sv[j], z = sv[H + j], n = sv[2 * H + j], hn = sv[3 * H + j];
    const T dnn = dn[j] * (T(1) - z) * (T(1) - n * n);
    const T dz = dn[j] * (prev[j] - n) * z * (T(1) - z), dr = dnn * hn * r * (T(1) - r);
    dpx[j] = dph[j] = dr, dpx[H + j] = dph[H + j] = dz;
    dpx[2 * H + j] = dnn, dph[2 * H + j] = dnn * r;
    dprev[j] = dn[j] * z;
  }
};

}  // namespace cells

namespace detail {
template <bool Ok, class X, class H0, class Wih, class Whh>
struct check_scan {
  static_assert(Ok, "loom::scan: needs x [T, B, I], h0 [B, S], w_ih [G*H, I], w_hh [G*H, H], b_ih and b_hh [G*H] "
                    "with S and G fixed by the cell (see check_scan below)");
  static constexpr bool value = Ok;
};
}  // namespace detail

namespace ops {

/// The scan's elementwise steps, written once: a loop on the host, a kernel on a device.
namespace scan_kernels {
template <class T>
struct AddBias {  // rows[r, j] += b[j] over rows [n, GH]
  T* rows;
  std::size_t GH;
  const T* b;
  std::ptrdiff_t bs;
  LOOM_HOST_DEVICE void operator()(std::size_t i) const { rows[i] += b[static_cast<std::ptrdiff_t>(i % GH) * bs]; }
};
template <class T>
struct ColumnSum {  // db[j] += sum over the n rows of rows[r, j] (a thread per column: no atomics)
  T* db;
  std::ptrdiff_t dbs;
  const T* rows;
  std::size_t n, GH;
  LOOM_HOST_DEVICE void operator()(std::size_t j) const {
    T acc = 0;
    for (std::size_t r = 0; r < n; ++r) acc += rows[r * GH + j];
    db[static_cast<std::ptrdiff_t>(j) * dbs] += acc;
  }
};
template <class T>
struct Strided2 {  // dst[b, s] (op)= src[b, s] between a contiguous [B, S] buffer and a strided view
  T* buf;
  T* view;
  std::ptrdiff_t s0, s1;
  std::size_t S;
  int mode;  // 0: buf = view, 1: view += buf, 2: buf += view (buf holds the carry)
  LOOM_HOST_DEVICE void operator()(std::size_t i) const {
    T& v = view[static_cast<std::ptrdiff_t>(i / S) * s0 + static_cast<std::ptrdiff_t>(i % S) * s1];
    if (mode == 0) buf[i] = v;
    else if (mode == 1) v += buf[i];
    else buf[i] += v;
  }
};
template <class Cell, class T>
struct Forward {  // one step: thread (b, j)
  std::size_t H, GH, S;
  const T* px;
  const T* ph;
  const T* prev;
  T* next;
  T* sv;
  LOOM_HOST_DEVICE void operator()(std::size_t i) const {
    const std::size_t b = i / H;
    Cell::forward(H, i % H, px + b * GH, ph + b * GH, prev + b * S, next + b * S, sv + b * Cell::saved * H);
  }
};
template <class Cell, class T>
struct Backward {
  std::size_t H, GH, S;
  const T* dn;
  const T* prev;
  const T* next;
  const T* sv;
  T* dpx;
  T* dph;
  T* dprev;
  LOOM_HOST_DEVICE void operator()(std::size_t i) const {
    const std::size_t b = i / H;
    Cell::backward(H, i % H, dn + b * S, prev + b * S, next + b * S, sv + b * Cell::saved * H, dpx + b * GH, dph + b * GH,
                   dprev + b * S);
  }
};
}  // namespace scan_kernels

template <class Cell>
struct Scan {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = true;
  static constexpr std::string_view name = Cell::name;
  template <class X, class H0, class Wih, class Whh, class Bih, class Bhh>
  using shape = Shape<X::extents[0], X::extents[1], H0::extents[1]>;

  Dims<3> dims(const Dims<3>& x, const Dims<2>& h0, const Dims<2>& wih, const Dims<2>& whh, const Dims<1>& bih,
               const Dims<1>& bhh) const {
    const std::size_t H = whh[1], GH = Cell::gates * H;
    if (wih[0] != GH || whh[0] != GH || wih[1] != x[2] || bih[0] != GH || bhh[0] != GH)
      throw shape_error("loom::scan(" + std::string(Cell::name) + "): input " + to_string(x) + " and weights " +
                        to_string(wih) + ", " + to_string(whh) + " do not fit");
    if (h0[0] != x[1] || h0[1] != Cell::state * H)
      throw shape_error("loom::scan(" + std::string(Cell::name) + "): initial state " + to_string(h0) +
                        " does not match input " + to_string(x) + " (want [B, " + std::to_string(Cell::state * H) + "])");
    return {x[0], x[1], h0[1]};
  }
  /// pre_x (then its gradient) [T, B, GH], saved activations [T, B, saved*H], one step's pre_h and its
  /// gradient [B, GH] x 2, the initial state and two state-gradient carries [B, S] x 3.
  std::size_t scratch(const Dims<3>& x, const Dims<2>& h0, const Dims<2>&, const Dims<2>& whh, const Dims<1>&,
                      const Dims<1>&) const {
    const std::size_t T = x[0], B = x[1], H = whh[1], GH = Cell::gates * H;
    return T * B * (GH + Cell::saved * H) + 2 * B * GH + 3 * B * h0[1];
  }

  template <class T>
  static detail::View<T, 2> mat(T* p, std::size_t r, std::size_t c, std::size_t ld) {
    return {p, {r, c}, {static_cast<std::ptrdiff_t>(ld), 1}};
  }
  template <class T>
  static detail::View<T, 2> step(const detail::View<T, 3>& v, std::size_t t) {
    return {v.data + static_cast<std::ptrdiff_t>(t) * v.strides[0], {v.dims[1], v.dims[2]}, {v.strides[1], v.strides[2]}};
  }
  /// C (+)= A B: Eigen / BLAS on the host, cuBLAS on a device.
  template <class D, class T>
  static void gemm(const detail::View<T, 2>& C, const detail::View<T, 2>& A, const detail::View<T, 2>& B, bool acc) {
    if constexpr (HostDevice<D>) backend::cpu::gemm(C, A, B, acc);
    else backend::device::gemm(C, A, B, acc);
  }

  // One implementation for every device: GEMMs and elementwise steps (see scan_kernels).
  template <class D, class T>
  void forward(on<D>, const detail::View<T, 3>& out, const detail::View<T, 3>& x, const detail::View<T, 2>& h0,
               const detail::View<T, 2>& wih, const detail::View<T, 2>& whh, const detail::View<T, 1>& bih,
               const detail::View<T, 1>& bhh, T* scratch) const {
    using namespace scan_kernels;
    const std::size_t Tn = x.dims[0], B = x.dims[1], H = whh.dims[1], GH = Cell::gates * H, S = out.dims[2];
    T *px = scratch, *sv = px + Tn * B * GH, *ph = sv + Tn * B * Cell::saved * H, *init = ph + 2 * B * GH;
    for (std::size_t t = 0; t < Tn; ++t)  // pre_x for every step
      gemm<D>(mat(px + t * B * GH, B, GH, GH), step(x, t), backend::cpu::transposed(wih), false);
    backend::each<D>(Tn * B * GH, AddBias<T>{px, GH, bih.data, bih.strides[0]});
    backend::each<D>(B * S, Strided2<T>{init, h0.data, h0.strides[0], h0.strides[1], S, 0});
    for (std::size_t t = 0; t < Tn; ++t) {
      const T* prev = t ? out.data + (t - 1) * B * S : init;  // the kernel's own output is contiguous
      gemm<D>(mat(ph, B, GH, GH), mat(const_cast<T*>(prev), B, H, S), backend::cpu::transposed(whh), false);
      backend::each<D>(B * GH, AddBias<T>{ph, GH, bhh.data, bhh.strides[0]});
      backend::each<D>(B * H, scan_kernels::Forward<Cell, T>{H, GH, S, px + t * B * GH, ph, prev, out.data + t * B * S,
                                                             sv + t * B * Cell::saved * H});
    }
  }

  template <class D, class T>
  void backward(on<D>, const detail::View<T, 3>& g, const detail::View<T, 3>& out,
                const std::pair<detail::View<T, 3>, detail::View<T, 3>>& x,
                const std::pair<detail::View<T, 2>, detail::View<T, 2>>& h0,
                const std::pair<detail::View<T, 2>, detail::View<T, 2>>& wih,
                const std::pair<detail::View<T, 2>, detail::View<T, 2>>& whh,
                const std::pair<detail::View<T, 1>, detail::View<T, 1>>& bih,
                const std::pair<detail::View<T, 1>, detail::View<T, 1>>& bhh, T* scratch) const {
    using namespace scan_kernels;
    const std::size_t Tn = x.first.dims[0], B = x.first.dims[1], H = whh.first.dims[1], GH = Cell::gates * H;
    const std::size_t S = out.dims[2];
    T *dpx = scratch, *sv = dpx + Tn * B * GH, *dph = sv + Tn * B * Cell::saved * H + B * GH;
    T *init = dph + B * GH, *carry = init + B * S, *dn = carry + B * S;
    detail::DeviceMemory<D>::fill(carry, B * S, T(0));
    for (std::size_t t = Tn; t-- > 0;) {
      const T* prev = t ? out.data + (t - 1) * B * S : init;
      // the gradient reaching state t: from the output at t and (carried) from step t + 1
      backend::each<D>(B * S, Strided2<T>{dn, g.data + static_cast<std::ptrdiff_t>(t) * g.strides[0], g.strides[1],
                                          g.strides[2], S, 0});
      backend::each<D>(B * S, Strided2<T>{dn, carry, static_cast<std::ptrdiff_t>(S), 1, S, 2});
      backend::each<D>(B * H, scan_kernels::Backward<Cell, T>{H, GH, S, dn, prev, out.data + t * B * S,
                                                              sv + t * B * Cell::saved * H, dpx + t * B * GH, dph, carry});
      // through h[t-1] W_hh^T: dh[t-1] += dpre_h W_hh,  dW_hh += dpre_h^T h[t-1]
      gemm<D>(mat(carry, B, H, S), mat(dph, B, GH, GH), whh.first, true);
      if (whh.second.data)
        gemm<D>(whh.second, backend::cpu::transposed(mat(dph, B, GH, GH)), mat(const_cast<T*>(prev), B, H, S), true);
      if (bhh.second.data) backend::each<D>(GH, ColumnSum<T>{bhh.second.data, bhh.second.strides[0], dph, B, GH});
    }
    if (h0.second.data)
      backend::each<D>(B * S, Strided2<T>{carry, h0.second.data, h0.second.strides[0], h0.second.strides[1], S, 1});
    for (std::size_t t = 0; t < Tn; ++t) {  // through x[t] W_ih^T, batched after the time loop
      const auto d = mat(dpx + t * B * GH, B, GH, GH);
      if (wih.second.data) gemm<D>(wih.second, backend::cpu::transposed(d), step(x.first, t), true);
      if (x.second.data) gemm<D>(step(x.second, t), d, wih.first, true);
    }
    if (bih.second.data) backend::each<D>(GH, ColumnSum<T>{bih.second.data, bih.second.strides[0], dpx, Tn * B, GH});
  }
};

}  // namespace ops

/// Runs `Cell` over the time axis of x [T, B, I] from the initial state h0 [B, S]; returns every state
/// [T, B, S]. Weights in PyTorch's layout: w_ih [G*H, I], w_hh [G*H, H], b_ih, b_hh [G*H].
template <class Cell, Expression X, Expression H0, Expression Wih, Expression Whh, Expression Bih, Expression Bhh>
auto scan(const X& x, const H0& h0, const Wih& w_ih, const Whh& w_hh, const Bih& b_ih, const Bhh& b_hh) {
  using SX = shape_t<X>;
  using SH = shape_t<H0>;
  using SI = shape_t<Wih>;
  using SW = shape_t<Whh>;
  constexpr bool ok = [] {
    if constexpr (SX::rank != 3 || SH::rank != 2 || SI::rank != 2 || SW::rank != 2 || shape_t<Bih>::rank != 1 ||
                  shape_t<Bhh>::rank != 1)
      return false;
    else {
      constexpr std::size_t H = SW::extents[1];
      const bool gh = H == dyn || ((SI::extents[0] == dyn || SI::extents[0] == Cell::gates * H) &&
                                   (SW::extents[0] == dyn || SW::extents[0] == Cell::gates * H) &&
                                   (SH::extents[1] == dyn || SH::extents[1] == Cell::state * H));
      return gh && detail::ext_eq(SX::extents[2], SI::extents[1]) && detail::ext_eq(SX::extents[1], SH::extents[0]);
    }
  }();
  detail::check_scan<ok, SX, SH, SI, SW>{};
  if constexpr (ok) return make_node(ops::Scan<Cell>{}, x, h0, w_ih, w_hh, b_ih, b_hh);
}

}  // namespace loom

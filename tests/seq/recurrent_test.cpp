// Recurrent cells through loom::scan: finite-difference checks of every cell (double), the modules
// against torch.nn.RNN / LSTM / GRU (tests/fixtures/gen_seq.py), run-time sequence lengths and truncated
// backpropagation through time with a carried state.
#include <loom/loom.hpp>
#include <loom/nn/recurrent.hpp>

#include "../support/fixtures.hpp"
#include "../support/gradcheck.hpp"

using namespace loom;
using loom::testing::gradcheck;
using loom::testing::param;

namespace {
template <class Cell>
void check_cell() {
  constexpr std::size_t T = 4, B = 2, I = 3, H = 3, G = Cell::gates, S = Cell::state * H;
  auto x = param<Shape<T, B, I>>(1), h0 = param<Shape<B, S>>(2);
  auto wih = param<Shape<G * H, I>>(3), whh = param<Shape<G * H, H>>(4);
  auto bih = param<Shape<G * H>>(5), bhh = param<Shape<G * H>>(6);
  gradcheck([&] { return scan<Cell>(x, h0, wih, whh, bih, bhh); }, x, h0, wih, whh, bih, bhh);
  // a permuted (batch-first) input and a strided initial state take the same path
  auto xb = param<Shape<B, T, I>>(7);
  gradcheck([&] { return scan<Cell>(permute<1, 0, 2>(xb), h0 * 1.0, wih, whh, bih, bhh); }, xb, h0, whh);
}
}  // namespace

TEST_CASE("scan: finite-difference checks of every cell") {
  SUBCASE("rnn tanh") { check_cell<cells::RNN<false>>(); }
  SUBCASE("rnn relu") { check_cell<cells::RNN<true>>(); }
  SUBCASE("lstm") { check_cell<cells::LSTM>(); }
  SUBCASE("gru") { check_cell<cells::GRU>(); }
}

namespace {
using loom::testing::compare;
using loom::testing::flat;

std::vector<float> get(const loom::testing::FixtureCase& c, const std::string& tag) {
  const auto v = loom::testing::tagged(c, tag);
  REQUIRE_MESSAGE(v.size() == 1, "fixture tag " << tag);
  return v[0];
}

/// Runs a module against a torch case: loss = sum(out * r_out) + sum(h_n * r_h) (+ sum(c_n * r_c)).
template <class Net, std::size_t T, std::size_t B>
void check_module(const std::string& name) {
  CAPTURE(name);
  constexpr std::size_t I = Net::in_features, H = Net::out_features, L = Net::num_layers, S = Net::state_size;
  constexpr bool lstm = S == 2 * H, batch_first = Net::batch_first;
  const auto& c = loom::testing::fixtures("seq.txt").at(name);
  Generator gen(0);
  Net net(gen);
  const auto params = nn::parameters(net);
  for (const auto& p : params) {
    const auto v = get(c, "param:" + p.name);
    REQUIRE(v.size() == p.size);
    std::copy(v.begin(), v.end(), p.value);
  }
  using XS = std::conditional_t<batch_first, Shape<B, T, I>, Shape<T, B, I>>;
  auto x = loom::testing::load_param<XS>(get(c, "x"));
  // h0 [L, B, S]: torch's h0 (and c0) side by side
  Param<float, Shape<L, B, S>> h0;
  const auto th0 = get(c, "h0");
  const auto tc0 = lstm ? get(c, "c0") : std::vector<float>{};
  for (std::size_t l = 0; l < L; ++l)
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t j = 0; j < H; ++j) {
        h0.value()(l, b, j) = th0[(l * B + b) * H + j];
        if (lstm) h0.value()(l, b, H + j) = tc0[(l * B + b) * H + j];
      }
  auto r = net(x, h0);
  using YS = shape_t<decltype(r.out)>;
  Tensor<float, Shape<YS::extents[0], YS::extents[1], H>> r_out;
  const auto ro = get(c, "r_out");
  std::copy(ro.begin(), ro.end(), r_out.data());
  Tensor<float, Shape<L, B, S>> r_state;
  const auto rh = get(c, "r_h");
  const auto rc = lstm ? get(c, "r_c") : std::vector<float>{};
  for (std::size_t l = 0; l < L; ++l)
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t j = 0; j < H; ++j) {
        r_state(l, b, j) = rh[(l * B + b) * H + j];
        if (lstm) r_state(l, b, H + j) = rc[(l * B + b) * H + j];
      }
  auto out_p = compile(r.out * 1.0f);
  compare(flat(out_p.forward().clone()), get(c, "y"), "output");
  auto state_p = compile(r.state * 1.0f);
  const auto st = state_p.forward().clone();
  std::vector<float> hn, cn;
  for (std::size_t l = 0; l < L; ++l)
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t j = 0; j < H; ++j) {
        hn.push_back(st(l, b, j));
        if (lstm) cn.push_back(st(l, b, H + j));
      }
  compare(hn, get(c, "hn"), "h_n");
  if (lstm) compare(cn, get(c, "cn"), "c_n");
  auto step = compile(sum(r.out * Constant<float, shape_t<decltype(r_out)>>(r_out)) +
                      sum(r.state * Constant<float, Shape<L, B, S>>(r_state)));
  step.forward();
  step.backward();
  for (const auto& p : params) compare(std::vector<float>(p.grad, p.grad + p.size), get(c, "grad:" + p.name), p.name.c_str());
  compare(flat(x.grad()), get(c, "dx"), "dx");
  std::vector<float> dh, dc;
  for (std::size_t l = 0; l < L; ++l)
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t j = 0; j < H; ++j) {
        dh.push_back(h0.grad()(l, b, j));
        if (lstm) dc.push_back(h0.grad()(l, b, H + j));
      }
  compare(dh, get(c, "dh0"), "dh0");
  if (lstm) compare(dc, get(c, "dc0"), "dc0");
}
}  // namespace

TEST_CASE("nn: RNN, LSTM and GRU match torch.nn (outputs, final states, every gradient)") {
  check_module<nn::RNN<4, 6>, 5, 3>("rnn_tanh");
  check_module<nn::RNNReLU<4, 6>, 5, 3>("rnn_relu");
  check_module<nn::LSTM<4, 6>, 5, 3>("lstm");
  check_module<nn::LSTM<4, 5, 2, true>, 5, 3>("lstm_2layer_batch_first");
  check_module<nn::GRU<4, 6>, 5, 3>("gru");
  check_module<nn::GRU<4, 5, 2>, 5, 3>("gru_2layer");
  static_assert(nn::LSTM<4, 6>::num_params == 4 * 6 * (4 + 6 + 2));
  static_assert(nn::GRU<4, 5, 2>::num_params == 3 * 5 * (4 + 5 + 2) + 3 * 5 * (5 + 5 + 2));
}

TEST_CASE("scan: run-time sequence length, and truncated BPTT with a carried state equals one long run") {
  constexpr std::size_t I = 3, H = 4, B = 2;
  Generator gen(5);
  nn::LSTM<I, H> lstm(gen);
  auto x = input<float, Shape<dyn, dyn, I>>();
  auto h0 = input<float, Shape<1, dyn, 2 * H>>();
  auto r = lstm(x, h0);
  auto seq = compile(r.out * 1.0f);
  auto state = compile(r.state * 1.0f);
  auto xs = normal<float, Shape<dyn, dyn, I>>(gen, 0, 1, {8, B, I});
  Tensor<float, Shape<1, dyn, 2 * H>> zero({1, B, 2 * H});
  zero.fill(0.0f);
  const auto full = seq.forward(xs, zero).clone();
  CHECK(full.dims() == Dims<3>{8, B, H});
  // two chunks of 3 and 5 steps, the state carried from the first into the second
  auto first = Tensor<float, Shape<dyn, dyn, I>>::wrap(xs.data(), {3, B, I});
  auto second = Tensor<float, Shape<dyn, dyn, I>>::wrap(xs.data() + 3 * B * I, {5, B, I});
  const auto carried = state.forward(first, zero).clone();
  const auto tail = seq.forward(second, carried).clone();
  CHECK(tail.dims() == Dims<3>{5, B, H});
  for (std::size_t t = 0; t < 5; ++t)
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t j = 0; j < H; ++j) CHECK(tail(t, b, j) == doctest::Approx(full(t + 3, b, j)).epsilon(1e-6));
  // a wrong state size is a run-time shape error naming both shapes
  Tensor<float, Shape<1, dyn, 2 * H>> wrong_batch({1, B + 1, 2 * H});
  CHECK_THROWS_WITH_AS(seq.forward(xs, wrong_batch), doctest::Contains("does not match input"), shape_error);
}

namespace {
/// A cell module iterated by the generic loom::scan, shaped like nn::RNN/LSTM/GRU (one layer,
/// time-first, h0 [1, B, S]) so that it runs against the same torch cases.
template <class Cell>
struct CellScan {
  static constexpr std::size_t in_features = Cell::in_features, out_features = Cell::out_features;
  static constexpr std::size_t num_layers = 1, state_size = Cell::state_size, num_params = Cell::num_params;
  static constexpr bool batch_first = false;
  Cell cell;
  explicit CellScan(Generator& g) : cell(g) {}
  template <class F>
  void visit(F&& f, const std::string& prefix) const {
    cell.visit([&](const std::string& n, const auto& p) { f(n + "_l0", p); }, prefix);
  }
  template <Expression X, Expression H0>
  auto operator()(const X& x, const H0& h0) const {
    auto states = cell.scan(x, reshape<Shape<dyn, state_size>>(h0));
    auto h = narrow<2, 0, out_features>(states);
    auto last = slice<0>(states, -1, std::numeric_limits<std::ptrdiff_t>::max());
    return nn::RecurrentOutput<decltype(h), decltype(last)>{h, last};
  }
};
}  // namespace

TEST_CASE("scan over expression cells: nn::RNNCell / LSTMCell / GRUCell match torch.nn.RNN / LSTM / GRU") {
  check_module<CellScan<nn::RNNCell<4, 6>>, 5, 3>("rnn_tanh");
  check_module<CellScan<nn::RNNReLUCell<4, 6>>, 5, 3>("rnn_relu");
  check_module<CellScan<nn::LSTMCell<4, 6>>, 5, 3>("lstm");
  check_module<CellScan<nn::GRUCell<4, 6>>, 5, 3>("gru");
  // PyTorch's cell parameter names
  Generator g(0);
  nn::GRUCell<4, 6> cell(g);
  std::vector<std::string> names;
  for (const auto& p : nn::parameters(cell)) names.push_back(p.name);
  CHECK(names == std::vector<std::string>{"weight_ih", "weight_hh", "bias_ih", "bias_hh"});
}

TEST_CASE("scan over expression cells: finite-difference checks, a user-written cell, shape errors") {
  constexpr std::size_t T = 4, B = 2, I = 3, H = 3;
  auto x = param<Shape<T, B, I>>(41);
  Generator g(5);
  SUBCASE("built-in cells as expressions") {
    nn::LSTMCell<I, H, double> lstm(g);
    auto h0 = param<Shape<B, 2 * H>>(42);
    gradcheck([&] { return lstm.scan(x, h0); }, x, h0, lstm.weight_ih, lstm.weight_hh, lstm.bias_ih, lstm.bias_hh);
    nn::GRUCell<I, H, double> gru(g);
    auto s0 = param<Shape<B, H>>(43);
    gradcheck([&] { return gru.scan(permute<1, 0, 2>(param<Shape<B, T, I>>(44)) * 1.0 + x, s0); }, x, s0, gru.weight_hh);
  }
  SUBCASE("a user-written cell reading its own parameters") {
    auto w = param<Shape<I, H>>(45), u = param<Shape<H, H>>(46);
    auto h0 = param<Shape<B, H>>(47);
    // a minimal gated unit: f = sigmoid(x W + h U), h' = f * h + (1 - f) * tanh(x W)
    auto cell = [&](const auto& xt, const auto& h) {
      return let(matmul(xt, w), [&](auto xw) {
        return let(sigmoid(xw + matmul(h, u)), [&](auto f) { return f * h + (1.0 - f) * tanh(xw); });
      });
    };
    gradcheck([&] { return scan(cell, x, h0); }, x, h0, w, u);
    // the sequence length is a run-time extent: one compiled program, two lengths
    auto xs = input<double, Shape<dyn, B, I>>();
    auto p = compile(sum(scan(cell, xs, h0)));
    Tensor<double, Shape<dyn, B, I>> a({2, B, I}), b({7, B, I});
    a.fill(0.5), b.fill(0.5);
    const double two = p.forward(a).item(), seven = p.forward(b).item();
    CHECK(std::isfinite(two));
    CHECK(seven != doctest::Approx(two));
  }
  SUBCASE("a batch that does not fit the initial state is a shape error") {
    nn::RNNCell<I, H, double> rnn(g);
    auto xs = input<double, Shape<T, dyn, I>>();
    auto p = compile(sum(rnn.scan(xs, Constant<double, Shape<dyn, H>>(Tensor<double, Shape<dyn, H>>({3, H})))));
    Tensor<double, Shape<T, dyn, I>> xb({T, 2, I});
    xb.fill(0.1);
    CHECK_THROWS_AS(p.forward(xb), shape_error);
  }
}

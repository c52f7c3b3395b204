// Values and gradients of every core op at float32 against PyTorch (fixtures written by
// tests/fixtures/gen_ops.py; the loss is sum(op(inputs) * w)).
#include <doctest/doctest.h>
#include <loom/loom.hpp>

#include "../support/extents.hpp"
#include "../support/fixtures.hpp"

using namespace loom;

namespace {
using loom::testing::compare;
using loom::testing::tagged;

struct Case {
  std::vector<std::vector<float>> in, grad;
  std::vector<float> out, w;
};

const std::map<std::string, Case>& fixtures() {
  static const std::map<std::string, Case> cases = [] {
    std::map<std::string, Case> m;
    for (const auto& [name, c] : loom::testing::fixtures("ops.txt"))
      m[name] = Case{tagged(c, "in"), tagged(c, "grad"), tagged(c, "out").at(0), tagged(c, "w").at(0)};
    return m;
  }();
  return cases;
}

using loom::testing::flat;
template <class S>
Param<float, S> load(const std::vector<float>& v) { return loom::testing::load_param<S>(v); }

/// Runs one case: make(params...) builds the op; checks the value and every input's gradient with one
/// program, op * w (value_over: its value over w is the op's; its backward, the gradients of the
/// fixture's loss sum(op * w)).
template <class... S, class Make>
void run(const std::string& name, Make make) {
  CAPTURE(name);
  const Case& c = fixtures().at(name);
  REQUIRE(c.in.size() == sizeof...(S));
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    auto params = std::tuple{load<S>(c.in[I])...};
    auto e = make(std::get<I>(params)...);
    using SE = shape_t<decltype(e)>;
    Tensor<float, SE> w(loom::testing::extents_of(e));
    REQUIRE(c.w.size() == w.size());
    std::copy(c.w.begin(), c.w.end(), w.data());
    auto step = compile(e * Constant<float, SE>(w));
    compare(loom::testing::value_over(step, c.w), c.out, "value");
    step.backward();
    (compare(flat(std::get<I>(params).grad()), c.grad[I], "grad"), ...);
  }(std::index_sequence_for<S...>{});
}

using A = Shape<3, 4>;
using B = Shape<4>;
using R = Shape<3, 1>;
using C = Shape<2, 3, 4>;
}  // namespace

TEST_CASE("torch fixtures: elementwise") {
  run<A, B>("add", [](auto a, auto b) { return a + b; });
  run<A, R>("sub", [](auto a, auto b) { return a - b; });
  run<A, B>("mul", [](auto a, auto b) { return a * b; });
  run<A, B>("div", [](auto a, auto b) { return a / b; });
  run<A, B>("pow", [](auto a, auto b) { return pow(a, b); });
  run<A>("pow_scalar", [](auto a) { return pow(a, 3); });
  run<A>("scalar_forms", [](auto a) { return 2.0f * a - 1.5f + a / 3.0f; });
  run<A>("neg", [](auto a) { return -a; });
  run<A>("exp", [](auto a) { return exp(a); });
  run<A>("log", [](auto a) { return log(a); });
  run<A>("sqrt", [](auto a) { return sqrt(a); });
  run<A>("abs", [](auto a) { return abs(a); });
  run<A>("tanh", [](auto a) { return tanh(a); });
  run<A>("sigmoid", [](auto a) { return sigmoid(a); });
  run<A>("relu", [](auto a) { return relu(a); });
  run<A>("gelu", [](auto a) { return gelu(a); });
  run<A, B>("maximum", [](auto a, auto b) { return maximum(a, b); });
  run<A, B>("minimum", [](auto a, auto b) { return minimum(a, b); });
  run<A, B>("where", [](auto a, auto b) { return where(greater(a, b), a, b * 2.0f); });
  run<A>("clamp", [](auto a) { return clamp(a, -0.5, 0.5); });
}

TEST_CASE("torch fixtures: reductions and softmax") {
  run<C>("sum_axis", [](auto a) { return sum<1>(a); });
  run<C>("sum_keepdims", [](auto a) { return sum<0, 2>(a, keepdims); });
  run<C>("mean_axis", [](auto a) { return mean<-1>(a); });
  run<C>("max_axis", [](auto a) { return max<1>(a); });
  run<C>("logsumexp", [](auto a) { return logsumexp<1>(a); });
  run<C>("softmax", [](auto a) { return softmax<-1>(a); });
  run<C>("log_softmax", [](auto a) { return log_softmax<1>(a); });
}

TEST_CASE("torch fixtures: matmul and shape ops") {
  run<Shape<3, 4>, Shape<4, 5>>("matmul", [](auto a, auto b) { return matmul(a, b); });
  run<Shape<2, 3, 5, 4>, Shape<4, 3>>("matmul_batched", [](auto a, auto b) { return matmul(a, b); });
  run<C>("transpose", [](auto a) { return transpose(a) * 1.0f; });
  run<C>("permute", [](auto a) { return permute<2, 0, 1>(a) * 1.0f; });
  run<C>("reshape", [](auto a) { return reshape<Shape<4, 6>>(a) * 1.0f; });
  run<A>("broadcast_to", [](auto a) { return broadcast_to<Shape<5, 3, 4>>(a) * 1.0f; });
  run<A>("slice", [](auto a) { return slice<1>(a, 0, 4, 2) * 1.0f; });
  run<A>("flip", [](auto a) { return flip<0>(a) * 1.0f; });
  run<A, Shape<3, 2>>("concat", [](auto a, auto b) { return concat<1>(a, b); });
  run<A, A>("stack", [](auto a, auto b) { return stack<0>(a, b); });
  run<A>("pad", [](auto a) { return pad<1, 2, 1>(a); });
  run<A>("split", [](auto a) {
    auto [p, q] = split<-1>(a, 1, 3);
    return sum<-1>(p, keepdims) * q;
  });
  run<A>("dilate", [](auto a) { return dilate<0, 2>(a); });
  run<A>("undilate", [](auto a) { return undilate<1, 1>(a) * 1.0f; });
  Tensor<std::int64_t, Shape<2, 3>> idx;
  const std::int64_t rows[] = {1, 4, 1, 0, 4, 2};  // as EMB_IDX in gen_ops.py
  std::copy(std::begin(rows), std::end(rows), idx.data());
  run<Shape<5, 3>>("embedding", [&](auto w) { return embedding(w, Constant<std::int64_t, Shape<2, 3>>(idx)); });
}

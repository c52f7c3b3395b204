// Batch norm (training step, running statistics, eval mode), layer norm and dropout against PyTorch,
// finite differences and their defining properties.
#include <loom/loom.hpp>

#include "../support/fixtures.hpp"
#include "../support/gradcheck.hpp"
#include "../support/threads.hpp"

using namespace loom;
using loom::testing::compare;
using loom::testing::tagged;

namespace {
using loom::testing::flat;
const auto& fx() { return loom::testing::fixtures("nn.txt"); }
template <class S>
void fill(const Param<float, S>& p, const std::vector<float>& v) {
  REQUIRE(v.size() == p.value().size());
  std::copy(v.begin(), v.end(), p.value().data());
}
}  // namespace

TEST_CASE("nn: BatchNorm2d matches PyTorch in training and eval mode") {
  const auto& c = fx().at("batch_norm");
  nn::BatchNorm2d<3> bn;
  fill(bn.weight, {1.5f, -0.5f, 2.0f});
  fill(bn.bias, {0.1f, 0.2f, -0.3f});
  Param<float, Shape<4, 3, 2, 5>> x;
  fill(x, tagged(c, "x").at(0));
  Tensor<float, Shape<4, 3, 2, 5>> r;
  const auto rv = tagged(c, "r").at(0);
  std::copy(rv.begin(), rv.end(), r.data());
  auto y = bn(x);
  auto step = compile(sum(y * Constant<float, Shape<4, 3, 2, 5>>(r)));
  auto value = compile(y);
  step.forward();
  step.backward();
  compare(flat(x.grad()), tagged(c, "dx").at(0), "dx", 1e-4f, 1e-4f);
  compare(flat(bn.weight.grad()), tagged(c, "dgamma").at(0), "dgamma", 1e-4f, 1e-4f);
  compare(flat(bn.bias.grad()), tagged(c, "dbeta").at(0), "dbeta", 1e-4f, 1e-4f);
  compare(std::vector<float>(bn.running_mean->begin(), bn.running_mean->end()), tagged(c, "running_mean").at(0), "running mean");
  compare(std::vector<float>(bn.running_var->begin(), bn.running_var->end()), tagged(c, "running_var").at(0), "running var");
  bn.set_training(false);
  compare(flat(value.forward()), tagged(c, "y_eval").at(0), "eval output", 1e-4f, 1e-4f);
}

TEST_CASE("nn: LayerNorm matches PyTorch and passes finite differences") {
  const auto& c = fx().at("layer_norm");
  nn::LayerNorm<6> ln;
  std::vector<float> gw(6), gb(6);
  for (int i = 0; i < 6; ++i) gw[i] = 0.5f + 0.2f * i, gb[i] = -0.2f + 0.1f * i;
  fill(ln.weight, gw);
  fill(ln.bias, gb);
  Param<float, Shape<3, 6>> x;
  fill(x, tagged(c, "x").at(0));
  Tensor<float, Shape<3, 6>> r;
  const auto rv = tagged(c, "r").at(0);
  std::copy(rv.begin(), rv.end(), r.data());
  compare(flat(compile(ln(x)).forward()), tagged(c, "y").at(0), "value", 1e-4f, 1e-4f);
  auto step = compile(sum(ln(x) * Constant<float, Shape<3, 6>>(r)));
  step.forward();
  step.backward();
  compare(flat(x.grad()), tagged(c, "dx").at(0), "dx", 1e-4f, 1e-4f);
  compare(flat(ln.weight.grad()), tagged(c, "dgamma").at(0), "dgamma", 1e-4f, 1e-4f);
  compare(flat(ln.bias.grad()), tagged(c, "dbeta").at(0), "dbeta", 1e-4f, 1e-4f);
  nn::LayerNorm<5, double> lnd;
  auto xd = loom::testing::param<Shape<4, 5>>(61);
  loom::testing::gradcheck([&] { return lnd(xd); }, xd, lnd.weight, lnd.bias);
  auto x3 = loom::testing::param<Shape<3, 2, 5>>(63);  // a strided (permuted) input of rank 3
  loom::testing::gradcheck([&] { return lnd(permute<1, 0, 2>(x3)); }, x3, lnd.weight, lnd.bias);
}

TEST_CASE("nn: batch norm passes finite differences in training and eval mode") {
  nn::BatchNorm<3, double> bn;
  auto x = loom::testing::param<Shape<5, 3, 2, 2>>(62);
  // (running statistics move on every forward; the gradient check only reads batch statistics)
  loom::testing::gradcheck([&] { return bn(x) * 1.0; }, x, bn.weight, bn.bias);
  bn.set_training(false);  // the running statistics (moved by the checks above) are constants
  loom::testing::gradcheck([&] { return bn(x) * 1.0; }, x, bn.weight, bn.bias);
}

TEST_CASE("nn: batch norm's channels split over threads give the one-thread values and gradients") {
#ifdef _OPENMP
  using loom::testing::values;
  nn::BatchNorm<8, double> bn;
  auto x = loom::testing::param<Shape<4, 8, 32, 32>>(64);  // 32768 elements: enough work for threads
  for (std::size_t c = 0; c < 8; ++c) bn.weight.value()(c) = 0.5 + 0.25 * double(c), bn.bias.value()(c) = 0.1 * double(c);
  auto y = bn(x);
  auto step = compile(y * tanh(y));
  loom::testing::same_on_threads([&] {
    x.zero_grad(), bn.weight.zero_grad(), bn.bias.zero_grad();
    auto v = values(step.forward());
    step.backward();
    return std::vector{v, values(x.grad()), values(bn.weight.grad()), values(bn.bias.grad())};
  }, [](const auto& r, const auto& one) { CHECK(r == one); });  // each channel is one thread's: equal
  CHECK(std::abs(bn.weight.grad()(3)) > 0);  // (a gradient that flows)
#else
  MESSAGE("built without OpenMP: batch norm runs its channels on one thread");
#endif
}

TEST_CASE("nn: dropout zeroes about p, rescales the rest, is the identity in eval mode") {
  Generator g(7);
  nn::Dropout<300> drop(g);
  Param<float, Shape<10000>> x(ones<float, Shape<10000>>());
  auto step = compile(sum(drop(x)));
  const float total = step.forward().item();
  std::size_t zeros = 0;
  step.backward();
  x.grad().for_each([&](float v) {
    zeros += v == 0.0f;
    if (v != 0.0f) CHECK(v == doctest::Approx(1 / 0.7));
  });
  CHECK(double(zeros) / 10000 == doctest::Approx(0.3).epsilon(0.1));
  CHECK(total == doctest::Approx(10000).epsilon(0.03));
  drop.set_training(false);
  CHECK(step.forward().item() == doctest::Approx(10000));
}

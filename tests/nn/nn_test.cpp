// nn modules, losses and optimizers: shapes and parameter counts known at compile time, PyTorch's
// init bounds, cross-entropy against PyTorch and by finite differences, optimizers against PyTorch.
#include <loom/loom.hpp>

#include <algorithm>

#include "../support/fixtures.hpp"
#include "../support/gradcheck.hpp"
#include "../support/threads.hpp"

using namespace loom;
using loom::testing::compare;
using loom::testing::tagged;

namespace {
const auto& nn_fixtures() { return loom::testing::fixtures("nn.txt"); }
}  // namespace

TEST_CASE("nn: a model is a type with a compile-time parameter count") {
  using Net = nn::Sequential<nn::Flatten, nn::Linear<784, 256>, nn::ReLU, nn::Linear<256, 10>>;
  static_assert(Net::num_params == 784 * 256 + 256 + 256 * 10 + 10);
  static_assert(Net::out_features == 10);
  Generator g(0);
  Net net(g);
  const auto params = nn::parameters(net);
  REQUIRE(params.size() == 4);
  CHECK(params[0].name == "1.weight");
  CHECK(params[0].dims == std::vector<std::size_t>{256, 784});
  CHECK(params[3].name == "3.bias");
  // PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
  float lo = 1, hi = -1;
  net.get<1>().weight.value().for_each([&](float v) { lo = std::min(lo, v), hi = std::max(hi, v); });
  const float bound = 1.0f / std::sqrt(784.0f);
  CHECK(lo >= -bound);
  CHECK(hi <= bound);
  CHECK(hi > 0.9f * bound);
  // The module's call is the expression one would write by hand.
  auto x = input<float, Shape<dyn, 1, 28, 28>>();
  Generator gx(1);
  auto xt = uniform<float, Shape<dyn, 1, 28, 28>>(gx, 0, 1, {3, 1, 28, 28});
  auto out = compile(net(x)).forward(xt).clone();
  const auto& l1 = net.get<1>();
  const auto& l3 = net.get<3>();
  Eigen::MatrixXf h = (xt.reshape<Shape<dyn, 784>>({3, 784}).matrix() * l1.weight.value().matrix().transpose()).rowwise() +
                      l1.bias.value().array().matrix().transpose();
  Eigen::MatrixXf ref = (h.array().max(0.0f).matrix() * l3.weight.value().matrix().transpose()).rowwise() +
                        l3.bias.value().array().matrix().transpose();
  CHECK(allclose(out, Tensor<float, Shape<dyn, 10>>::from_eigen(ref), 1e-4, 1e-5));
}

TEST_CASE("nn: cross-entropy matches PyTorch (with and without label smoothing)") {
  for (const auto& [name, smoothing] : {std::pair{"cross_entropy", 0.0}, std::pair{"cross_entropy_smooth", 0.1}}) {
    const auto& c = nn_fixtures().at(name);
    Param<float, Shape<5, 7>> x;
    const auto xv = tagged(c, "x").at(0);
    std::copy(xv.begin(), xv.end(), x.value().data());
    auto y = input<std::int64_t, Shape<dyn>>();
    Tensor<std::int64_t, Shape<dyn>> yt({5});
    const auto yv = tagged(c, "y").at(0);
    for (std::size_t i = 0; i < 5; ++i) yt(i) = static_cast<std::int64_t>(yv[i]);
    auto step = compile(nn::cross_entropy(x, y, smoothing));
    compare({step.forward(yt).item()}, tagged(c, "loss").at(0), "loss");
    step.backward();
    std::vector<float> g(x.grad().data(), x.grad().data() + 35);
    compare(g, tagged(c, "grad").at(0), "grad");
  }
}

TEST_CASE("nn: cross-entropy and the other losses pass finite-difference checks") {
  auto x = loom::testing::param<Shape<4, 6>>(41);
  auto t = loom::testing::param<Shape<4, 6>>(42, 0.0, 1.0);
  auto y = input<std::int64_t, Shape<dyn>>();
  Tensor<std::int64_t, Shape<dyn>> yt({4}, {5, 0, 2, 2});
  y.bind(yt);
  loom::testing::gradcheck([&] { return nn::cross_entropy(x * 2.0, y, 0.2) * 1.0; }, x);
  loom::testing::gradcheck([&] { return nn::mse_loss(x, t); }, x, t);
  loom::testing::gradcheck([&] { return nn::bce_with_logits(x * 3.0, t); }, x, t);
  Tensor<std::int64_t, Shape<dyn>> bad({4}, {5, 0, 6, 2});
  y.bind(bad);
  auto step = compile(nn::cross_entropy(x, y));
  CHECK_THROWS_WITH_AS(step.forward(), doctest::Contains("label 6 outside [0, 6)"), std::out_of_range);
}

TEST_CASE("optim: SGD, Adam and AdamW follow PyTorch's trajectories") {
  auto run = [&](const std::string& name, auto make) {
    for (const bool fused_zero : {false, true}) {  // step(), and step_and_zero_grad() (the same update, grads cleared)
      CAPTURE(name);
      CAPTURE(fused_zero);
      const auto& c = nn_fixtures().at(name);
      Param<float, Shape<3, 4>> p;
      const auto p0 = tagged(c, "p0").at(0);
      std::copy(p0.begin(), p0.end(), p.value().data());
      std::vector<nn::ParamRef<float>> refs{{"p", p.value().data(), p.grad().data(), 12, {3, 4}}};
      auto opt = make(refs);
      const auto gs = tagged(c, "g"), ps = tagged(c, "p");
      for (std::size_t t = 0; t < gs.size(); ++t) {
        std::copy(gs[t].begin(), gs[t].end(), p.grad().data());
        if (fused_zero) {
          opt.step_and_zero_grad();
          CHECK(std::all_of(p.grad().data(), p.grad().data() + 12, [](float g) { return g == 0.0f; }));
        } else {
          opt.step();
          CHECK(std::equal(gs[t].begin(), gs[t].end(), p.grad().data()));  // step() leaves the gradient alone
        }
        compare(std::vector<float>(p.value().data(), p.value().data() + 12), ps[t], "param", 1e-6f, 1e-5f);
      }
    }
  };
  run("sgd_momentum_nesterov_wd", [](auto r) {
    return optim::SGD<float>(r, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true});
  });
  run("sgd_momentum_dampening", [](auto r) { return optim::SGD<float>(r, {.lr = 0.05, .momentum = 0.8, .dampening = 0.1}); });
  run("adam", [](auto r) { return optim::Adam<float>(r, {.lr = 0.01, .weight_decay = 0.1}); });
  run("adamw", [](auto r) { return optim::AdamW<float>(r, {.lr = 0.01, .weight_decay = 0.1}); });
  run("rmsprop", [](auto r) { return optim::RMSprop<float>(r, {.lr = 0.01, .weight_decay = 0.05, .momentum = 0.5}); });
}

TEST_CASE("optim: the host's vectorized updates are the per-element rule, on any number of threads") {
  // A parameter long enough to be split over threads (backend::each: 2^16 elements and up), not a
  // multiple of the block; values in [-2, 2], gradients three orders of magnitude smaller.
  constexpr std::size_t n = 70001;
  Generator gen(5);
  const auto init = uniform<float, Shape<n>>(gen, -2, 2);
  const auto grads = uniform<float, Shape<n>>(gen, -1e-3, 1e-3);
  auto run = [&](auto make, bool clear) {
    Param<float, Shape<n>> p(init.clone());
    std::vector<nn::ParamRef<float>> refs{{"p", p.value().data(), p.grad().data(), n, {n}}};
    auto opt = make(refs);
    for (int t = 0; t < 3; ++t) {
      std::copy(grads.data(), grads.data() + n, p.grad().data());
      if (clear) opt.step_and_zero_grad();
      else opt.step();
    }
    return std::vector<float>(p.value().data(), p.value().data() + n);
  };
  // The reference: the update functor's per-element operator(), the rule a device kernel runs.
  auto reference = [&](auto update, std::size_t state) {
    auto value = init.clone();
    std::vector<float> grad(n), s0(state ? n : 0), s1(state > 1 ? n : 0);
    for (int t = 0; t < 3; ++t) {
      std::copy(grads.data(), grads.data() + n, grad.begin());
      const auto u = update(value.data(), s0.data(), s1.data(), grad.data(), t);
      for (std::size_t k = 0; k < n; ++k) u(k);
    }
    return std::vector<float>(value.data(), value.data() + n);
  };
  auto close = [](const std::vector<float>& a, const std::vector<float>& b) {
    REQUIRE(a.size() == b.size());
    float worst = 0;
    for (std::size_t k = 0; k < a.size(); ++k) worst = std::max(worst, std::abs(a[k] - b[k]) / std::max(1.0f, std::abs(b[k])));
    CHECK(worst < 1e-6f);  // rounding alone (the vector code contracts other products into FMAs than the scalar)
  };
  const double lr = 0.01, wd = 0.1;
  // Adam (L2 penalty in the gradient; step_and_zero_grad) and AdamW (decoupled decay; step).
  auto adam = [&]<bool Decoupled, bool Clear>(auto make) {
    close(run(make, Clear), reference([&](float* v, float* m, float* s, float* g, int t) {
            const double bc1 = 1 - std::pow(0.9, t + 1), bc2 = 1 - std::pow(0.999, t + 1);
            return optim::detail::AdamUpdate<float, Decoupled, Clear>{v, m, s, g, float(lr), 0.9f, 0.999f, 1e-8f, float(wd),
                                                                      float(lr / bc1), float(std::sqrt(bc2))};
          }, 2));
#ifdef _OPENMP
    loom::testing::same_on_threads([&] { return run(make, Clear); }, [](const auto& a, const auto& b) { CHECK(a == b); });
#endif
  };
  SUBCASE("adam") {
    adam.template operator()<false, true>([&](auto r) { return optim::Adam<float>(r, {.lr = lr, .weight_decay = wd}); });
  }
  SUBCASE("adamw") {
    adam.template operator()<true, false>([&](auto r) { return optim::AdamW<float>(r, {.lr = lr, .weight_decay = wd}); });
  }
  SUBCASE("rmsprop, momentum") {
    auto make = [&](auto r) { return optim::RMSprop<float>(r, {.lr = lr, .weight_decay = wd, .momentum = 0.5}); };
    close(run(make, true), reference([&](float* v, float* sq, float* b, float* g, int) {
            return optim::detail::RMSpropUpdate<float, true>{v, sq, b, g, float(lr), 0.99f, 1e-8f, float(wd), 0.5f};
          }, 2));
#ifdef _OPENMP
    loom::testing::same_on_threads([&] { return run(make, true); }, [](const auto& a, const auto& b) { CHECK(a == b); });
#endif
  }
}

TEST_CASE("optim: learning-rate schedules follow PyTorch's schedulers") {
  auto lr = [](const char* name) { return loom::testing::tagged(nn_fixtures().at(name), "lr").at(0); };
  const auto warm = lr("schedule_warmup_cosine"), cos = lr("schedule_cosine"), step = lr("schedule_step");
  for (std::size_t s = 0; s <= 20; ++s)  // torch's cosine keeps oscillating past T_max; loom's stays at the floor
    CHECK(optim::cosine_lr(0.1, s, 20, 5, 0.001, 0.25) == doctest::Approx(warm[s]).epsilon(1e-6));
  CHECK(optim::cosine_lr(0.1, 24, 20, 5, 0.001, 0.25) == doctest::Approx(0.001));
  for (std::size_t s = 0; s < cos.size(); ++s) CHECK(optim::cosine_lr(0.1, s, 12) == doctest::Approx(cos[s]).epsilon(1e-6));
  for (std::size_t s = 0; s < step.size(); ++s) CHECK(optim::step_lr(0.1, s, 4, 0.5) == doctest::Approx(step[s]).epsilon(1e-6));
}

TEST_CASE("optim: clip_grad_norm scales all gradients to the global norm") {
  std::vector<float> v1(3, 0), g1{3, 0, 0}, v2(1, 0), g2{4};
  std::vector<nn::ParamRef<float>> refs{{"a", v1.data(), g1.data(), 3, {3}}, {"b", v2.data(), g2.data(), 1, {1}}};
  CHECK(optim::clip_grad_norm(refs, 10.0) == doctest::Approx(5.0));
  CHECK(g1[0] == 3.0f);
  CHECK(optim::clip_grad_norm(refs, 1.0) == doctest::Approx(5.0));
  CHECK(g1[0] == doctest::Approx(0.6f));
  CHECK(g2[0] == doctest::Approx(0.8f));
}

TEST_CASE("nn: nll_loss of log_softmax equals cross_entropy, values and gradients") {
  auto x = loom::testing::param<Shape<4, 6>>(81);
  auto x2 = loom::testing::param<Shape<4, 6>>(81);
  auto y = input<std::int64_t, Shape<dyn>>();
  Tensor<std::int64_t, Shape<dyn>> yt({4}, {5, 0, 2, 2});
  y.bind(yt);
  auto a = compile(nn::nll_loss(log_softmax<-1>(x), y));
  auto b = compile(nn::cross_entropy(x2, y));
  CHECK(a.forward().item() == doctest::Approx(b.forward().item()).epsilon(1e-12));
  a.backward();
  b.backward();
  CHECK(allclose(x.grad(), x2.grad(), 1e-10, 1e-12));
  loom::testing::gradcheck([&] { return nn::nll_loss(x * 1.0, y) * 1.0; }, x);
}

TEST_CASE("nn: initializers follow torch.nn.init's bounds and deviations") {
  Generator g(9);
  Param<float, Shape<300, 200>> w;
  nn::init::xavier_uniform(w, g);
  const double b = std::sqrt(6.0 / 500);
  float lo = 1, hi = -1;
  w.value().for_each([&](float v) { lo = std::min(lo, v), hi = std::max(hi, v); });
  CHECK(hi <= b);
  CHECK(lo >= -b);
  CHECK(hi > 0.99 * b);
  Param<double, Shape<64, 32, 3, 3>> c;
  nn::init::kaiming_normal(c, g);
  double sq = 0;
  c.value().for_each([&](double v) { sq += v * v; });
  CHECK(std::sqrt(sq / double(c.value().size())) == doctest::Approx(std::sqrt(2.0 / (32 * 9))).epsilon(0.03));
  CHECK(nn::init::fans(c).second == 64.0 * 9);
}

TEST_CASE("nn: sum reduction equals the batch (or element) count times the mean, values and gradients") {
  auto x = loom::testing::param<Shape<4, 6>>(82), x2 = loom::testing::param<Shape<4, 6>>(82);
  auto t = loom::testing::param<Shape<4, 6>>(83);
  auto y = input<std::int64_t, Shape<dyn>>();
  Tensor<std::int64_t, Shape<dyn>> yt({4}, {1, 3, 3, 0});
  y.bind(yt);
  auto same = [&](auto mean_loss, auto sum_loss, double n) {
    auto a = compile(mean_loss), b = compile(sum_loss);
    x.zero_grad(), x2.zero_grad();
    CHECK(b.forward().item() == doctest::Approx(n * a.forward().item()).epsilon(1e-12));
    a.backward();
    b.backward();
    x.grad().for_each([&](double& g) { g *= n; });
    CHECK(allclose(x.grad(), x2.grad(), 1e-10, 1e-12));
  };
  same(nn::cross_entropy(x, y, 0.1), nn::cross_entropy<nn::Reduction::sum>(x2, y, 0.1), 4);
  same(nn::nll_loss(x * 1.0, y), nn::nll_loss<nn::Reduction::sum>(x2 * 1.0, y), 4);
  same(nn::mse_loss(x, t), nn::mse_loss<nn::Reduction::sum>(x2, t), 24);
  same(nn::l1_loss(x, t), nn::l1_loss<nn::Reduction::sum>(x2, t), 24);
  same(nn::bce_with_logits(x, t), nn::bce_with_logits<nn::Reduction::sum>(x2, t), 24);
  loom::testing::gradcheck([&] { return nn::cross_entropy<nn::Reduction::sum>(x * 1.5, y); }, x);
}

TEST_CASE("nn: Softmax and LogSoftmax modules act on the last axis") {
  auto x = loom::testing::param<Shape<3, 5>>(84);
  auto p = compile(nn::Softmax{}(x)).forward().clone();
  auto lp = compile(nn::LogSoftmax{}(x)).forward().clone();
  for (std::size_t r = 0; r < 3; ++r) {
    double s = 0;
    for (std::size_t c = 0; c < 5; ++c) {
      s += p(r, c);
      CHECK(std::log(p(r, c)) == doctest::Approx(lp(r, c)));
    }
    CHECK(s == doctest::Approx(1.0));
  }
  using Net = nn::Sequential<nn::Linear<5, 4, true, double>, nn::LogSoftmax>;
  static_assert(Net::num_params == 24);
}

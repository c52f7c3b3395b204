// Training on the device against the host: steps, optimizers, CNNs, norms, a Transformer LM, KV-cached
// decoding, checkpoints. Built like device_test.cpp (g++ on the OMP system; nvcc for CUDA).
#include "device_support.hpp"

namespace {
template <class D>
struct Mlp {  // 20 -> 32 -> 5 with ReLU, the parameters on device D
  Param<float, Shape<32, 20>, D> w1;
  Param<float, Shape<32>, D> b1;
  Param<float, Shape<5, 32>, D> w2;
  Param<float, Shape<5>, D> b2;
  auto operator()(const auto& x) const { return matmul(relu(matmul(x, transpose(w1)) + b1), transpose(w2)) + b2; }
};
template <class D>
Mlp<D> mlp(std::uint64_t seed) {
  Generator g(seed);
  auto u = [&]<class S>(S) { return Param<float, S, D>(uniform<float, S, D>(g, -0.3, 0.3)); };
  return {u(Shape<32, 20>{}), u(Shape<32>{}), u(Shape<5, 32>{}), u(Shape<5>{})};
}
}  // namespace

TEST_CASE("device: an MLP training step (cross-entropy) matches the host, without allocating") {
  auto h = mlp<cpu>(21);
  auto d = mlp<gpu>(21);
  auto xh = input<float, Shape<dyn, 20>>();
  auto yh = input<std::int64_t, Shape<dyn>>();
  auto xd = input<float, Shape<dyn, 20>, gpu>();
  auto yd = input<std::int64_t, Shape<dyn>, gpu>();
  auto ph = compile(nn::cross_entropy(h(xh), yh, 0.1));
  auto pd = compile(nn::cross_entropy(d(xd), yd, 0.1));
  Generator g(5);
  const auto xb = uniform<float, Shape<dyn, 20>>(g, -1, 1, {16, 20});
  Tensor<std::int64_t, Shape<dyn>> yb({16});
  for (std::size_t i = 0; i < 16; ++i) yb(i) = static_cast<std::int64_t>(i % 5);
  const auto xbd = xb.to<gpu>();
  const auto ybd = yb.to<gpu>();
  const float lh = ph.forward(xb, yb).item();
  const float ld = pd.forward(xbd, ybd).item();
  CHECK(ld == doctest::Approx(lh).epsilon(1e-5));
  ph.backward();
  pd.backward();
  check_close(h.w1.grad(), d.w1.grad(), 1e-5);
  check_close(h.b1.grad(), d.b1.grad(), 1e-5);
  check_close(h.w2.grad(), d.w2.grad(), 1e-5);
  check_close(h.b2.grad(), d.b2.grad(), 1e-5);

  SUBCASE("steady-state steps take no new device memory") {
    const auto before = device::allocator_stats().system_allocs;
    for (int i = 0; i < 3; ++i) {
      pd.forward(xbd, ybd);
      pd.backward();
    }
    CHECK(device::allocator_stats().system_allocs == before);
  }
  SUBCASE("nll_loss of log_softmax equals cross_entropy") {
    auto pn = compile(nn::nll_loss(log_softmax(d(xd)), yd));
    auto pc = compile(nn::cross_entropy(d(xd), yd));
    CHECK(pn.forward(xbd, ybd).item() == doctest::Approx(pc.forward(xbd, ybd).item()).epsilon(1e-5));
  }
  SUBCASE("a label outside [0, C) throws, as on the host") {
    auto bad = yb.clone();
    bad(3) = 7;
    CHECK_THROWS_AS(pd.forward(xbd, bad.to<gpu>()), std::out_of_range);
  }
  SUBCASE("a wrong batch is a shape_error naming both shapes") {
    const auto y8 = Tensor<std::int64_t, Shape<dyn>>({8}).to<gpu>();
    CHECK_THROWS_AS(pd.forward(xbd, y8), shape_error);
  }
}

namespace {
using Net = nn::Sequential<nn::Linear<12, 16>, nn::ReLU, nn::Linear<16, 4>>;
using GpuNet = Net::on_device<gpu>;
static_assert(std::is_same_v<decltype(GpuNet{std::declval<Generator&>()}.get<0>().weight), Param<float, Shape<16, 12>, gpu>>);

/// Trains the host and the device copy of N for a few steps with the optimizer `make` builds on inputs
/// of shape [10, Sample...]; the parameters must stay equal.
template <class N = Net, class XS = Shape<dyn, 12>, class Make>
void train_both(Make make, double tol) {
  Generator g1(3), g2(3);
  N h(g1);
  typename N::template on_device<gpu> d(g2);
  auto xh = input<float, XS>();
  auto yh = input<std::int64_t, Shape<dyn>>();
  auto xd = input<float, XS, gpu>();
  auto yd = input<std::int64_t, Shape<dyn>, gpu>();
  auto ph = compile(nn::cross_entropy(h(xh), yh));
  auto pd = compile(nn::cross_entropy(d(xd), yd));
  auto oh = make(nn::parameters(h));
  auto od = make(nn::parameters<float, gpu>(d));
  Generator g(7);
  auto xdims = XS::dims_or(10);
  const auto x = uniform<float, XS>(g, -1, 1, xdims);
  Tensor<std::int64_t, Shape<dyn>> y({10});
  for (std::size_t i = 0; i < 10; ++i) y(i) = static_cast<std::int64_t>((i * 7) % 3);
  const auto x2 = x.template to<gpu>();
  const auto y2 = y.template to<gpu>();
  for (int s = 0; s < 4; ++s) {
    const float lh = ph.forward(x, y).item(), ld = pd.forward(x2, y2).item();
    CHECK(ld == doctest::Approx(lh).epsilon(tol));
    ph.backward();
    pd.backward();
    oh.step();
    od.step();
    oh.zero_grad();
    od.zero_grad();
  }
  const auto rh = nn::parameters(h);
  const auto rd = nn::parameters<float, gpu>(d);
  REQUIRE(rh.size() == rd.size());
  for (std::size_t i = 0; i < rh.size(); ++i) {
    std::vector<float> v(rd[i].size), gd(rd[i].size);
    loom::detail::DeviceMemory<gpu>::to_host(v.data(), rd[i].value, v.size());
    loom::detail::DeviceMemory<gpu>::to_host(gd.data(), rd[i].grad, gd.size());
    for (std::size_t k = 0; k < v.size(); ++k) {
      CHECK_MESSAGE(std::abs(v[k] - rh[i].value[k]) <= tol * (1 + std::abs(rh[i].value[k])), rh[i].name << "[" << k << "]");
      CHECK(gd[k] == 0.0f);  // zero_grad ran on the device
    }
  }
}
}  // namespace

TEST_CASE("device: optimizers update device parameters as on the host") {
  SUBCASE("sgd, momentum, nesterov, weight decay") {
    train_both([]<class D>(std::vector<nn::ParamRef<float, D>> p) {
      return optim::SGD<float, D>(p, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true});
    }, 1e-5);
  }
  SUBCASE("adam") {
    train_both([]<class D>(std::vector<nn::ParamRef<float, D>> p) { return optim::Adam<float, D>(p, {.lr = 0.01}); }, 1e-5);
  }
  SUBCASE("adamw") {
    train_both([]<class D>(std::vector<nn::ParamRef<float, D>> p) { return optim::AdamW<float, D>(p, {.lr = 0.01}); }, 1e-5);
  }
  SUBCASE("rmsprop with momentum") {
    train_both([]<class D>(std::vector<nn::ParamRef<float, D>> p) {
      return optim::RMSprop<float, D>(p, {.lr = 0.01, .momentum = 0.5});
    }, 1e-5);
  }
}

TEST_CASE("device: an update of 40 parameters (two launches of up to 32) matches the host's, per parameter") {
  // Sizes 0 (skipped), 1, ..., 300: the element ranges of neighbouring parameters meet inside a run.
  constexpr std::size_t P = 40;
  std::vector<Tensor<float, Shape<dyn>>> hv, hg;
  std::vector<Tensor<float, Shape<dyn>, gpu>> dv, dg;
  Generator g(11);
  for (std::size_t i = 0; i < P; ++i) {
    const std::size_t n = i == 7 ? 0 : 1 + (i * 37) % 300;
    hv.push_back(uniform<float, Shape<dyn>>(g, -1, 1, {n}));
    dv.push_back(hv.back().to<gpu>());
    hg.emplace_back(Dims<1>{n});
    dg.emplace_back(Dims<1>{n});
  }
  auto refs = [&]<class D>(auto& v, auto& gr) {
    std::vector<nn::ParamRef<float, D>> r;
    for (std::size_t i = 0; i < P; ++i) r.push_back({"p" + std::to_string(i), v[i].data(), gr[i].data(), v[i].size(), {v[i].size()}});
    return r;
  };
  const auto rh = refs.operator()<cpu>(hv, hg);
  const auto rd = refs.operator()<gpu>(dv, dg);
  auto set_grads = [&](std::uint64_t seed) {
    Generator gg(seed);
    for (std::size_t i = 0; i < P; ++i) {
      hg[i].assign(uniform<float, Shape<dyn>>(gg, -2, 2, {hv[i].size()}));
      dg[i].assign(hg[i].to<gpu>());
    }
  };
  auto compare = [&](double tol) {
    for (std::size_t i = 0; i < P; ++i) {
      check_close(hv[i], dv[i], tol);
      check_close(hg[i], dg[i], 0);
    }
  };
  SUBCASE("adam, step_and_zero_grad") {
    optim::Adam<float> oh(rh, {.lr = 0.05, .weight_decay = 0.01});
    optim::Adam<float, gpu> od(rd, {.lr = 0.05, .weight_decay = 0.01});
    for (std::uint64_t s = 0; s < 3; ++s) {
      set_grads(s);
      oh.step_and_zero_grad();
      od.step_and_zero_grad();
      compare(1e-6);
    }
  }
  SUBCASE("sgd with momentum, zero_grad") {
    optim::SGD<float> oh(rh, {.lr = 0.1, .momentum = 0.9});
    optim::SGD<float, gpu> od(rd, {.lr = 0.1, .momentum = 0.9});
    for (std::uint64_t s = 0; s < 3; ++s) {
      set_grads(s);
      oh.step();
      od.step();
      compare(1e-6);
      oh.zero_grad();
      od.zero_grad();
      compare(1e-6);
    }
  }
  SUBCASE("clip_grad_norm") {
    set_grads(5);
    const double nh = optim::clip_grad_norm(rh, 1.0), nd = optim::clip_grad_norm(rd, 1.0);
    CHECK(nh > 1.0);
    CHECK(nd == doctest::Approx(nh).epsilon(1e-12));
    for (std::size_t i = 0; i < P; ++i) check_close(hg[i], dg[i], 1e-6);
  }
}

TEST_CASE("device: a small CNN (Conv2d, ReLU, max pooling, Linear) trains as on the host") {
  using Cnn = nn::Sequential<nn::Conv2d<1, 4, 3, 1, 1>, nn::ReLU, nn::MaxPool2d<2>, nn::Flatten, nn::Linear<4 * 4 * 4, 3>>;
  train_both<Cnn, Shape<dyn, 1, 8, 8>>([]<class D>(std::vector<nn::ParamRef<float, D>> p) {
    return optim::Adam<float, D>(p, {.lr = 0.01});
  }, 1e-4);
}

TEST_CASE("device: an MLP with layer norm and a CNN with batch norm and dropout train as on the host") {
  SUBCASE("layer norm") {
    using LnNet = nn::Sequential<nn::Linear<12, 16>, nn::LayerNorm<16>, nn::ReLU, nn::Linear<16, 4>>;
    train_both<LnNet>([]<class D>(std::vector<nn::ParamRef<float, D>> p) { return optim::Adam<float, D>(p, {.lr = 0.01}); }, 1e-4);
  }
  SUBCASE("batch norm, dropout") {
    using BnCnn = nn::Sequential<nn::Conv2d<1, 4, 3, 1, 1>, nn::BatchNorm2d<4>, nn::ReLU, nn::MaxPool2d<2>, nn::Flatten,
                                 nn::Dropout<200>, nn::Linear<4 * 4 * 4, 3>>;
    train_both<BnCnn, Shape<dyn, 1, 8, 8>>([]<class D>(std::vector<nn::ParamRef<float, D>> p) {
      return optim::SGD<float, D>(p, {.lr = 0.05, .momentum = 0.9});
    }, 1e-4);
  }
}

TEST_CASE("device: a Transformer language model trains as on the host") {
  using LM = nn::TransformerLM<11, 8, 2, 1, 8, 16>;
  Generator g1(9), g2(9);
  LM h(g1);
  LM::on_device<gpu> d(g2);
  Tensor<std::int64_t, Shape<dyn, dyn>> x({3, 6}), y({3, 6});
  for (std::size_t i = 0; i < 18; ++i) x(i / 6, i % 6) = std::int64_t((i * 5) % 11), y(i / 6, i % 6) = std::int64_t((i * 7 + 1) % 11);
  const auto pos = LM::positions(6);
  auto step = [](const auto& net, auto d) {
    using D = decltype(d);
    auto xs = input<std::int64_t, Shape<dyn, dyn>, D>();
    auto ys = input<std::int64_t, Shape<dyn, dyn>, D>();
    auto ps = input<std::int64_t, Shape<dyn>, D>();
    return compile(nn::cross_entropy(reshape<Shape<dyn, 11>>(net(xs, ps)), reshape<Shape<dyn>>(ys)));
  };
  auto ph = step(h, cpu{});
  auto pd = step(d, gpu{});
  auto oh = optim::Adam<float>(nn::parameters(h), {.lr = 0.01});
  auto od = optim::Adam<float, gpu>(nn::parameters<float, gpu>(d), {.lr = 0.01});
  const auto x2 = x.to<gpu>(), y2 = y.to<gpu>();
  const auto p2 = pos.to<gpu>();
  float first = 0, last = 0;
  for (int s = 0; s < 5; ++s) {
    const float lh = ph.forward(x, y, pos).item(), ld = pd.forward(x2, y2, p2).item();  // (inputs in creation order)
    CHECK(ld == doctest::Approx(lh).epsilon(1e-4));
    (s == 0 ? first : last) = ld;
    ph.backward(), pd.backward();
    oh.step(), od.step();
    oh.zero_grad(), od.zero_grad();
  }
  CHECK(last < first);
}

TEST_CASE("device: KV-cached decoding on the device gives the full forward's logits; export_to a device tensor") {
  constexpr std::size_t V = 11, B = 2, T = 6;
  using LM = nn::TransformerLM<V, 8, 2, 2, 8>::on_device<gpu>;
  Generator g(3);
  LM lm(g);
  Tensor<std::int64_t, Shape<dyn, dyn>> seq({B, T});
  for (std::size_t i = 0; i < B * T; ++i) seq(i / T, i % T) = std::int64_t((5 * i + 2) % V);
  auto tokens = input<std::int64_t, Shape<dyn, dyn>, gpu>();
  auto positions = input<std::int64_t, Shape<dyn>, gpu>();
  Tensor<float, DynShape<3>, gpu> exported;
  auto full = compile(lm(tokens, positions) + export_to(lm(tokens, positions), exported) * 0.0f);
  const auto want = full.forward(seq.to<gpu>(), LM::positions(T).to<gpu>()).to<cpu>();
  check_close(want, exported, 1e-6);
  auto cache = lm.make_cache(B);
  auto lengths = input<std::int64_t, Shape<dyn>, gpu>();
  auto step = compile(lm.decode(tokens, positions, lengths, cache));
  for (std::size_t from = 0; from < T; from += (from == 0 ? 3 : 1)) {  // a 3-token prompt, then one at a time
    const std::size_t n = from == 0 ? 3 : 1;
    Tensor<std::int64_t, Shape<dyn, dyn>> x({B, n});
    Tensor<std::int64_t, Shape<dyn>> len({B});
    for (std::size_t i = 0; i < B * n; ++i) x(i / n, i % n) = seq(i / n, from + i % n);
    len.fill(std::int64_t(from + n));
    const auto out = step.forward(x.to<gpu>(), LM::positions(n, from).to<gpu>(), len.to<gpu>()).to<cpu>();
    cache.pos += n;
    for (std::size_t i = 0; i < B * n * V; ++i) {
      const std::size_t b = i / (n * V), t = i / V % n, v = i % V;
      CHECK(out(b, t, v) == doctest::Approx(want(b, from + t, v)).epsilon(1e-4));
    }
  }
}

TEST_CASE("device: clip_grad_norm and checkpoints of a device model") {
  Generator g1(4), g2(4);
  Net h(g1);
  GpuNet d(g2);
  auto xh = input<float, Shape<dyn, 12>>();
  auto xd = input<float, Shape<dyn, 12>, gpu>();
  auto ph = compile(sum(h(xh) * h(xh)));
  auto pd = compile(sum(d(xd) * d(xd)));
  Generator g(8);
  const auto x = uniform<float, Shape<dyn, 12>>(g, -1, 1, {6, 12});
  ph.forward(x);
  pd.forward(x.to<gpu>());
  ph.backward();
  pd.backward();
  auto rh = nn::parameters(h);
  auto rd = nn::parameters<float, gpu>(d);
  const double nh = optim::clip_grad_norm(rh, 0.5), nd = optim::clip_grad_norm(rd, 0.5);
  CHECK(nd == doctest::Approx(nh).epsilon(1e-5));
  check_close(h.get<0>().weight.grad(), d.get<0>().weight.grad(), 1e-5);

  optim::Adam<float, gpu> opt(rd, {.lr = 0.01});
  opt.step();
  const std::string path = "device_test_checkpoint.safetensors";
  io::save_module(path, d, io::optimizer_state(opt));
  Generator g3(99);
  GpuNet e(g3);
  optim::Adam<float, gpu> opt2(nn::parameters<float, gpu>(e), {.lr = 0.01});
  const auto file = io::load_module(path, e);
  io::restore_optimizer(opt2, file, path);
  check_close(d.get<0>().weight.value().to<cpu>(), e.get<0>().weight.value(), 0);
  CHECK(opt2.step_count() == 1);
  check_close(opt.state_buffers()[1].second->to<cpu>(), *opt2.state_buffers()[1].second, 0);
  std::remove(path.c_str());
}

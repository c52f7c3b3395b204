// Convolution and pooling: finite-difference checks (double), PyTorch's conv2d over 16 shape sets
// (odd sizes, stride 2-3, padding 0-3, dilation 2, 1x1 and 7x7 kernels) and max_pool2d, and a CNN
// whose spatial extents flow through the types.
#include <loom/loom.hpp>

#include <tuple>
#ifdef _OPENMP
#include <omp.h>
#endif

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
Param<float, S> load(const std::vector<float>& v) { return loom::testing::load_param<S>(v); }

/// Runs the backward of sum(y * r) for the fixture's weights r (the loss the fixtures differentiate).
template <class Y>
void backward_weighted(const Y& y, const std::vector<float>& rv) {
  using SY = shape_t<Y>;
  Tensor<float, SY> r;
  REQUIRE(rv.size() == r.size());
  std::copy(rv.begin(), rv.end(), r.data());
  auto step = compile(sum(y * Constant<float, SY>(r)));
  step.forward();
  step.backward();
}

template <std::size_t Id, std::size_t N, std::size_t Cin, std::size_t H, std::size_t W, std::size_t Cout, std::size_t K,
          std::size_t S, std::size_t P, std::size_t D>
void conv_case() {
  const auto& c = fx().at("conv2d_" + std::to_string(Id));
  CAPTURE(Id);
  auto x = load<Shape<N, Cin, H, W>>(tagged(c, "x").at(0));
  auto w = load<Shape<Cout, Cin, K, K>>(tagged(c, "w").at(0));
  auto y = conv2d<S, P, D>(x, w);
  using SY = shape_t<decltype(y)>;
  static_assert(SY::is_static);
  auto fwd = compile(y);
  compare(flat(fwd.forward()), tagged(c, "y").at(0), "conv2d value", 1e-4f, 1e-4f);
  backward_weighted(y, tagged(c, "r").at(0));
  compare(flat(x.grad()), tagged(c, "dx").at(0), "conv2d dx", 1e-4f, 1e-4f);
  compare(flat(w.grad()), tagged(c, "dw").at(0), "conv2d dw", 1e-4f, 1e-4f);
}
}  // namespace

TEST_CASE("conv2d: finite-difference gradients (stride, padding, dilation)") {
  auto x = loom::testing::param<Shape<2, 2, 6, 5>>(51);
  auto w = loom::testing::param<Shape<3, 2, 3, 3>>(52);
  auto b = loom::testing::param<Shape<3, 1, 1>>(53);
  loom::testing::gradcheck([&] { return conv2d(x, w) + b; }, x, w, b);
  auto w9 = loom::testing::param<Shape<9, 2, 3, 3>>(57);  // a whole register block of output channels and more
  loom::testing::gradcheck([&] { return conv2d<1, 1>(x, w9); }, x, w9);
  loom::testing::gradcheck([&] { return conv2d<2, 1>(x, w); }, x, w);
  loom::testing::gradcheck([&] { return conv2d<1, 2, 2>(x, w); }, x, w);
  loom::testing::gradcheck([&] { return conv2d<3, 2, 2>(x, w); }, x, w);  // padding read on both sides of a row
  loom::testing::gradcheck([&] { return max_pool2d<2>(tanh(conv2d<1, 1>(x, w))); }, x, w);
}

namespace {
/// conv2d<1, P, D>'s value, dx and dW for the loss sum(y * r), against the definition summed in
/// double: sizes that give the host's stride-1 kernels whole blocks of output channels and vectors
/// and remainders of both (11 output channels, rows of 13 + padding), a non-square kernel.
template <class T, std::size_t P, std::size_t D, std::size_t KH, std::size_t KW, std::size_t C = 3, std::size_t O = 11,
          std::size_t H = 9, std::size_t W = 13, std::size_t N = 2>
void direct_case(double tol, bool normwise = false) {
  const std::size_t pad = P, dilation = D, kh = KH, kw = KW;
  CAPTURE(pad);
  CAPTURE(dilation);
  CAPTURE(kh);
  CAPTURE(kw);
  Generator gen(61);
  Param<T, Shape<N, C, H, W>> x(normal<T, Shape<N, C, H, W>>(gen));
  Param<T, Shape<O, C, KH, KW>> w(normal<T, Shape<O, C, KH, KW>>(gen));
  auto y = conv2d<1, P, D>(x, w);
  using SY = shape_t<decltype(y)>;
  constexpr std::size_t HO = SY::extents[2], WO = SY::extents[3];
  const auto r = normal<T, SY>(gen);
  auto step = compile(sum(y * Constant<T, SY>(r)));
  step.forward();
  step.backward();
  const auto yv = loom::testing::values(compile(y).forward());
  std::vector<double> want_y(N * O * HO * WO, 0.0), want_dx(N * C * H * W, 0.0), want_dw(O * C * KH * KW, 0.0);
  for (std::size_t n = 0; n < N; ++n)
    for (std::size_t o = 0; o < O; ++o)
      for (std::size_t oh = 0; oh < HO; ++oh)
        for (std::size_t ow = 0; ow < WO; ++ow) {
          const std::size_t k = ((n * O + o) * HO + oh) * WO + ow;
          for (std::size_t c = 0; c < C; ++c)
            for (std::size_t ki = 0; ki < KH; ++ki)
              for (std::size_t kj = 0; kj < KW; ++kj) {
                const auto ih = static_cast<std::ptrdiff_t>(oh + ki * D) - static_cast<std::ptrdiff_t>(P);
                const auto iw = static_cast<std::ptrdiff_t>(ow + kj * D) - static_cast<std::ptrdiff_t>(P);
                if (ih < 0 || iw < 0 || ih >= static_cast<std::ptrdiff_t>(H) || iw >= static_cast<std::ptrdiff_t>(W)) continue;
                const std::size_t xi = ((n * C + c) * H + static_cast<std::size_t>(ih)) * W + static_cast<std::size_t>(iw);
                const std::size_t wi = ((o * C + c) * KH + ki) * KW + kj;
                want_y[k] += double(x.value().data()[xi]) * double(w.value().data()[wi]);
                want_dx[xi] += double(r.data()[k]) * double(w.value().data()[wi]);
                want_dw[wi] += double(r.data()[k]) * double(x.value().data()[xi]);
              }
        }
  auto check = [&](const std::vector<double>& got, const std::vector<double>& want, const std::string& what) {
    CAPTURE(what);
    REQUIRE(got.size() == want.size());
    double scale = 1.0;  // normwise: the tolerance relative to the largest magnitude (Winograd's error bound)
    if (normwise)
      for (double v : want) scale = std::max(scale, std::abs(v));
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(tol).scale(scale));
  };
  check(yv, want_y, "value");
  check(loom::testing::values(x.grad()), want_dx, "dx");
  check(loom::testing::values(w.grad()), want_dw, "dW");
}
}  // namespace

TEST_CASE("conv2d, stride 1 on the host: register blocks and their remainders against the definition") {
  direct_case<float, 1, 1, 3, 3>(1e-5);
  direct_case<float, 0, 1, 3, 3>(1e-5);
  direct_case<float, 2, 2, 3, 3>(1e-5);
  direct_case<float, 1, 1, 2, 5>(1e-5);  // padding below D (K - 1) on one axis, equal on the other
  direct_case<float, 0, 1, 1, 1>(1e-5);
  direct_case<double, 1, 1, 3, 3>(1e-12);
  direct_case<double, 3, 1, 5, 4>(1e-12);
  direct_case<double, 1, 1, 1, 1>(1e-12);  // padding past D (K - 1): the im2col path
}

namespace {
/// Forces host::winograd_tile() for its scope; back to automatic on exit (also when a REQUIRE throws, so
/// a failure does not leave the tile forced for the test cases after it).
struct ForcedTile {
  explicit ForcedTile(std::size_t m) { loom::host::winograd_tile() = m; }
  ~ForcedTile() { loom::host::winograd_tile() = 0; }
  ForcedTile(const ForcedTile&) = delete;
  ForcedTile& operator=(const ForcedTile&) = delete;
};
}  // namespace

TEST_CASE("conv2d 3x3 by Winograd's F(2x2, 3x3) and F(4x4, 3x3) on the host: against the definition, on threads, gradients") {
  using loom::backend::cpu::winograd::stats;
  const std::size_t before = stats().forwards, before_bwd = stats().backwards, before_f4 = stats().f4;
  // partial tiles (extents not a multiple of the tile), tile rows of one vector and of several (W = 40:
  // 20 tiles of 2, 10 of 4; W = 70: 17 tiles of 4), channel counts off the register blocks (9 in, 11
  // and 17 out), padding 0, 1 and 2. Float: within 1e-5 of the largest magnitude of each result
  // (Winograd's error bound is normwise: the transforms' sums cancel, so an element can be off by more
  // than its own size would allow — F(2x2, 3x3) per element misses 2e-5 by 1.3x in the SSE2 build —
  // while the largest error stays ~1e-6 of the largest magnitude; the direct kernels: 1e-5 per element).
  for (std::size_t m : {2, 4}) {
    CAPTURE(m);
    const ForcedTile tile(m);
    direct_case<float, 1, 1, 3, 3, 8, 8, 9, 13>(1e-5, true);
    direct_case<float, 0, 1, 3, 3, 9, 17, 10, 12>(1e-5, true);
    direct_case<float, 2, 1, 3, 3, 8, 11, 7, 7>(1e-5, true);
    direct_case<float, 1, 1, 3, 3, 16, 32, 5, 40>(1e-5, true);
    direct_case<float, 1, 1, 3, 3, 8, 8, 11, 70>(1e-5, true);
    // more samples than the weight gradient transforms before its dot products run (9 x 13: 3 vectors of
    // tiles per sample, 8 samples at a time): a full batch, then the rest in finish_weight_grad
    direct_case<float, 1, 1, 3, 3, 8, 8, 9, 13, 11>(1e-5, true);
    direct_case<double, 1, 1, 3, 3, 8, 9, 9, 13, 11>(1e-12);
    direct_case<double, 1, 1, 3, 3, 8, 9, 9, 13>(1e-12);
    direct_case<double, 0, 1, 3, 3, 9, 8, 6, 35>(1e-12);
    direct_case<double, 2, 1, 3, 3, 8, 8, 10, 10>(1e-12);
  }
#if defined(LOOM_CPU_RUNS_DEVICE_KERNELS)
  MESSAGE("the op suite through the device code: conv2d runs the device's kernels (Winograd is the host's path)");
  (void)before, (void)before_bwd, (void)before_f4;
#else
  CHECK(stats().f4 > before_f4);  // the cases above ran the Winograd path, with both tiles
  CHECK(stats().forwards > before);
  CHECK(stats().backwards > before_bwd);
#endif
  auto x = loom::testing::param<Shape<3, 8, 7, 6>>(57);
  auto w = loom::testing::param<Shape<9, 8, 3, 3>>(58);
  for (std::size_t m : {2, 4}) {
    CAPTURE(m);
    const ForcedTile tile(m);
    loom::testing::gradcheck([&] { return conv2d<1, 1>(x, w); }, x, w);
    loom::testing::gradcheck([&] { return conv2d<1, 2>(x, w); }, x, w);
  }
#ifdef _OPENMP
  auto y = conv2d<1, 1>(x, w);
  auto step = compile(sum(y * tanh(y)));
  for (std::size_t m : {2, 4}) {
    CAPTURE(m);
    const ForcedTile tile(m);
    loom::testing::same_on_threads([&] {
      x.zero_grad(), w.zero_grad();
      auto v = loom::testing::values(step.forward());
      step.backward();
      return std::vector{v, loom::testing::values(x.grad()), loom::testing::values(w.grad())};
    }, [&](const auto& r, const auto& one) {  // equal up to the order of dW's partial sums
      for (std::size_t k = 0; k < r.size(); ++k) {
        REQUIRE(r[k].size() == one[k].size());
        for (std::size_t i = 0; i < r[k].size(); ++i) CHECK(r[k][i] == doctest::Approx(one[k][i]).epsilon(1e-12));
      }
    });
  }
#endif
  // and the direct kernels give the same (host::winograd_conv() = false)
  Generator gen(59);
  Param<float, Shape<2, 12, 9, 11>> fp(normal<float, Shape<2, 12, 9, 11>>(gen));
  Param<float, Shape<10, 12, 3, 3>> fw(normal<float, Shape<10, 12, 3, 3>>(gen));
  auto fstep = compile(sum(conv2d<1, 1>(fp, fw) * conv2d<1, 1>(fp, fw)));
  auto run = [&] {
    fp.zero_grad(), fw.zero_grad();
    auto v = loom::testing::values(fstep.forward());
    fstep.backward();
    return std::vector{v, loom::testing::values(fp.grad()), loom::testing::values(fw.grad())};
  };
  const auto wino = run();
  loom::host::winograd_conv() = false;
  const std::size_t direct_before = stats().forwards;
  const auto direct = run();
  loom::host::winograd_conv() = true;
  CHECK(stats().forwards == direct_before);
  for (std::size_t k = 0; k < wino.size(); ++k) {
    REQUIRE(wino[k].size() == direct[k].size());
    double big = 0;  // Winograd's error bound is normwise: relative to the largest magnitude, not to each element
    for (double v : direct[k]) big = std::max(big, std::abs(v));
    for (std::size_t i = 0; i < wino[k].size(); ++i) CHECK(wino[k][i] == doctest::Approx(direct[k][i]).epsilon(1e-5).scale(big));
  }
}

TEST_CASE("conv2d and max_pool2d: samples and planes split over threads give the one-thread values and gradients") {
#ifdef _OPENMP
  using loom::testing::values;
  SUBCASE("conv2d") {
    auto x = loom::testing::param<Shape<5, 2, 6, 5>>(54);  // 5 samples: uneven splits over 2 and 3 threads
    auto w = loom::testing::param<Shape<3, 2, 3, 3>>(55);
    auto y = conv2d<1, 1>(x, w);
    auto step = compile(sum(y * tanh(y)));
    loom::testing::same_on_threads([&] {
      x.zero_grad(), w.zero_grad();
      auto v = values(step.forward());
      step.backward();
      return std::vector{v, values(x.grad()), values(w.grad())};
    }, [&](const auto& r, const auto& one) {  // equal up to the order of dW's partial sums
      for (std::size_t k = 0; k < r.size(); ++k) {
        REQUIRE(r[k].size() == one[k].size());
        for (std::size_t i = 0; i < r[k].size(); ++i) CHECK(r[k][i] == doctest::Approx(one[k][i]).epsilon(1e-12));
      }
      loom::testing::gradcheck([&] { return conv2d<2, 1>(x, w); }, x, w);  // on 2 and 3 threads, as before
    });
  }
  SUBCASE("max_pool2d, overlapping windows") {
    auto x = loom::testing::param<Shape<4, 8, 33, 33>>(56);  // 4 x 8 planes of 16 x 16 windows of 3 x 3
    auto step = compile(sum(tanh(max_pool2d<3, 2>(x))));
    loom::testing::same_on_threads([&] {
      x.zero_grad();
      auto v = values(step.forward());
      step.backward();
      return std::vector{v, values(x.grad())};
    }, [](const auto& r, const auto& one) { CHECK(r == one); });  // each plane is one thread's: equal
  }
#else
  MESSAGE("built without OpenMP: conv2d and max_pool2d run on one thread");
#endif
}

TEST_CASE("conv2d and max_pool2d match PyTorch") {
  conv_case<0, 2, 3, 5, 5, 4, 3, 1, 0, 1>();
  conv_case<1, 1, 1, 7, 7, 2, 3, 1, 1, 1>();
  conv_case<2, 2, 2, 8, 8, 3, 3, 2, 1, 1>();
  conv_case<3, 1, 3, 9, 7, 2, 3, 2, 0, 1>();
  conv_case<4, 2, 4, 6, 6, 5, 1, 1, 0, 1>();
  conv_case<5, 1, 2, 7, 9, 3, 1, 2, 0, 1>();
  conv_case<6, 1, 1, 11, 11, 2, 7, 1, 3, 1>();
  conv_case<7, 1, 2, 9, 9, 2, 7, 2, 2, 1>();
  conv_case<8, 2, 3, 10, 10, 2, 5, 1, 2, 1>();
  conv_case<9, 1, 2, 13, 11, 3, 3, 3, 1, 1>();
  conv_case<10, 2, 1, 6, 6, 1, 2, 2, 0, 1>();
  conv_case<11, 1, 3, 9, 9, 2, 3, 1, 2, 2>();
  conv_case<12, 1, 2, 12, 12, 4, 3, 2, 2, 1>();
  conv_case<13, 3, 2, 5, 7, 2, 3, 1, 1, 1>();
  conv_case<14, 1, 4, 8, 8, 2, 4, 2, 1, 1>();
  conv_case<15, 2, 2, 15, 15, 3, 3, 1, 0, 2>();
  auto pool = [&]<std::size_t Id, std::size_t N, std::size_t C, std::size_t H, std::size_t W, std::size_t K, std::size_t S>() {
    const auto& c = fx().at("max_pool2d_" + std::to_string(Id));
    auto x = load<Shape<N, C, H, W>>(tagged(c, "x").at(0));
    auto y = max_pool2d<K, S>(x);
    compare(flat(compile(y).forward()), tagged(c, "y").at(0), "pool value");
    backward_weighted(y, tagged(c, "r").at(0));
    compare(flat(x.grad()), tagged(c, "dx").at(0), "pool dx");
  };
  pool.template operator()<0, 2, 3, 8, 8, 2, 2>();
  pool.template operator()<1, 1, 2, 9, 7, 3, 2>();
  pool.template operator()<2, 1, 1, 6, 6, 3, 1>();
}

TEST_CASE("nn: a CNN's spatial extents flow through the types") {
  using Net = nn::Sequential<nn::Conv2d<1, 8, 3, 1, 1>, nn::ReLU, nn::MaxPool2d<2>, nn::Conv2d<8, 16, 3, 1, 1>,
                             nn::ReLU, nn::MaxPool2d<2>, nn::Flatten, nn::Linear<16 * 7 * 7, 10>>;
  static_assert(Net::num_params == (8 * 9 + 8) + (16 * 8 * 9 + 16) + (784 * 10 + 10));
  Generator g(3);
  Net net(g);
  auto x = input<float, Shape<dyn, 1, 28, 28>>();
  auto out = net(x);
  static_assert(std::is_same_v<shape_t<decltype(out)>, Shape<dyn, 10>>);
  auto xt = uniform<float, Shape<dyn, 1, 28, 28>>(g, 0, 1, {2, 1, 28, 28});
  auto v = compile(out).forward(xt);
  CHECK(v.dims() == Dims<2>{2, 10});
  CHECK(std::isfinite(v(1, 9)));
}

TEST_CASE("nn: residual blocks, average pooling and the model summary") {
  // A small ResNet-like net for 28x28 inputs; its parameter count is known at compile time.
  using Block16 = nn::Residual<nn::Conv2d<16, 16, 3, 1, 1>, nn::BatchNorm2d<16>, nn::ReLU, nn::Conv2d<16, 16, 3, 1, 1>,
                              nn::BatchNorm2d<16>>;
  using Net = nn::Sequential<nn::Conv2d<1, 16, 3, 1, 1>, nn::BatchNorm2d<16>, nn::ReLU, nn::MaxPool2d<2>, Block16,
                             nn::ReLU, nn::AvgPool2d<2>, nn::GlobalAvgPool, nn::Linear<16, 10>>;
  constexpr std::size_t conv16 = 16 * 16 * 9 + 16, bn16 = 32;
  static_assert(Net::num_params == (16 * 9 + 16) + bn16 + (2 * conv16 + 2 * bn16) + (16 * 10 + 10));
  Generator g(4);
  Net net(g);
  const auto table = Net::summary<Shape<dyn, 1, 28, 28>>();
  CHECK(table.find("Residual") != std::string::npos);
  CHECK(table.find("[dyn, 16, 7, 7]") != std::string::npos);  // after AvgPool2d
  CHECK(table.find("[dyn, 10]") != std::string::npos);
  CHECK(table.find(std::to_string(2 * 16 * 10)) != std::string::npos);  // Linear FLOPs
  // The residual block counts its two 3x3 convolutions (16 -> 16 on 14x14) plus the rest of its body.
  constexpr std::size_t block_conv = 2 * 16 * 9 * 16 * 14 * 14;
  static_assert(Block16::flops_of<Input<float, Shape<dyn, 16, 14, 14>>>() > 2 * block_conv);
  CHECK(table.find(std::to_string(Block16::flops_of<Input<float, Shape<dyn, 16, 14, 14>>>())) != std::string::npos);
  auto x = input<float, Shape<dyn, 1, 28, 28>>();
  auto y = input<std::int64_t, Shape<dyn>>();
  auto step = compile(nn::cross_entropy(net(x), y));
  auto xt = uniform<float, Shape<dyn, 1, 28, 28>>(g, 0, 1, {4, 1, 28, 28});
  Tensor<std::int64_t, Shape<dyn>> yt({4}, {1, 2, 3, 4});
  const float first = step.forward(xt, yt).item();
  optim::Adam<float> opt(nn::parameters(net), {.lr = 1e-2});
  for (int i = 0; i < 20; ++i) {
    step.forward(xt, yt);
    step.backward();
    opt.step();
    opt.zero_grad();
  }
  CHECK(step.forward(xt, yt).item() < 0.5f * first);  // it can fit four samples
  auto a = loom::testing::param<Shape<2, 3, 6, 4>>(71);
  loom::testing::gradcheck([&] { return avg_pool2d<2>(a) * 1.0; }, a);
  loom::testing::gradcheck([&] { return avg_pool2d<3, 1>(a * a); }, a);
}

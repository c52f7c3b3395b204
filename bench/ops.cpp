// Operator benchmarks: every op family, forward ("fwd") and forward + backward ("bwd"), at small,
// medium and large sizes, named BM_<op>_<fwd|bwd>_<backend>; loom against hand-written Eigen for the
// key workloads (elementwise chain, matmul, conv2d, MLP step). LibTorch runs the same work in bench_torch
// (torch_ops.cpp). bench/compare runs both and prints loom / reference ratios.
//   build/bench/bench/bench_ops --benchmark_format=json
#include <loom/bench.hpp>
#include <loom/loom.hpp>

#include <Eigen/Core>

using namespace loom;
using bench::Cost;

// bench_ops_blas builds this file with loom's GEMMs routed to OpenBLAS (LOOM_USE_CBLAS).
#ifndef LOOM_BENCH_BACKEND
#define LOOM_BENCH_BACKEND "loom"
#endif

namespace {

template <class S>
Param<float, S> rnd(std::uint64_t seed) {
  Generator g(seed);
  return Param<float, S>(uniform<float, S>(g, -1, 1));
}
/// A run-time-shaped operand with a gradient: random value and gradient tensors bound to a Variable.
template <class S>
struct Var {
  Tensor<float, S> value, grad;
  Variable<float, S> v;
  explicit Var(Dims<S::rank> d, std::uint64_t seed = 1) : value(random(d, seed)), grad(d) { v.bind(value, grad); }
  static Tensor<float, S> random(Dims<S::rank> d, std::uint64_t seed) {
    Generator g(seed);
    return uniform<float, S>(g, -1, 1, d);
  }
};

template <class Program>
void fwd_or_bwd(benchmark::State& s, Program& p, bool bwd, Cost c) {
  if (bwd) bench::forward_backward(s, p, c);
  else bench::forward(s, p, c);
}

// ---- elementwise chain: tanh(a*b + c) * 0.5 + a -------------------------------------------------------
// a, b, c are parameters of run-time length n (gradients for all three in "bwd").
void BM_chain_fwd_loom(benchmark::State& s, bool bwd) {
  const auto n = std::size_t(s.range(0));
  Var<Shape<dyn>> a({n}, 1), b({n}, 2), c({n}, 3);
  auto p = compile(tanh(a.v * b.v + c.v) * 0.5f + a.v);
  // forward reads 3, writes 1; backward (seeded with ones) writes 3 more
  fwd_or_bwd(s, p, bwd, {.flops = (bwd ? 12.0 : 6.0) * double(n), .bytes = (bwd ? 7.0 : 4.0) * 4 * double(n)});
}
void BM_chain_fwd_eigen(benchmark::State& s, bool bwd) {
  const auto n = Eigen::Index(s.range(0));
  Eigen::ArrayXf a = Eigen::ArrayXf::Random(n), b = Eigen::ArrayXf::Random(n), c = Eigen::ArrayXf::Random(n);
  Eigen::ArrayXf t(n), out(n), ga = Eigen::ArrayXf::Zero(n), gb = Eigen::ArrayXf::Zero(n), gc = Eigen::ArrayXf::Zero(n);
  bench::run(s, {.flops = (bwd ? 12.0 : 6.0) * double(n), .bytes = (bwd ? 7.0 : 4.0) * 4 * double(n)}, [&] {
    if (!bwd) {
      out = (a * b + c).tanh() * 0.5f + a;
      benchmark::DoNotOptimize(out.data());
      return;
    }
    t = (a * b + c).tanh();  // the forward keeps tanh for the backward
    out = t * 0.5f + a;
    t = 0.5f * (1.0f - t.square());  // the backward: t becomes dt, then the three gradients
    gc += t;
    ga += t * b + 1.0f;
    gb += t * a;
    benchmark::DoNotOptimize(gb.data());
  });
}
// The chain's forward + backward memory traffic without its arithmetic: one plain loop reading a, b, c
// and the three gradients and writing the result, the kept value and the gradients (11 streams, as
// loom's one loop), with a polynomial in place of tanh. What memory alone costs the chain at 1e7.
void BM_streams_plain(benchmark::State& s) {
  const auto n = std::size_t(s.range(0));
  std::vector<float> a(n, 0.5f), b(n, 0.25f), c(n, 0.125f), t(n), out(n), ga(n), gb(n), gc(n);
  bench::run(s, {.bytes = 7.0 * 4 * double(n)}, [&] {
    const float* __restrict pa = a.data();
    const float* __restrict pb = b.data();
    const float* __restrict pc = c.data();
    float* __restrict pt = t.data();
    float* __restrict po = out.data();
    float* __restrict pga = ga.data();
    float* __restrict pgb = gb.data();
    float* __restrict pgc = gc.data();
    for (std::size_t i = 0; i < n; ++i) {
      const float x = pa[i] * pb[i] + pc[i];
      pt[i] = x;
      po[i] = x * 0.5f + pa[i];
      const float d = 0.5f * (1.0f - x * x);
      pgc[i] += d;
      pga[i] += d * pb[i] + 1.0f;
      pgb[i] += d * pa[i];
    }
    benchmark::DoNotOptimize(pgb);
  });
}
void BM_copy_eigen(benchmark::State& s) {  // the machine's copy bandwidth (read n + write n floats)
  const auto n = Eigen::Index(s.range(0));
  Eigen::ArrayXf a = Eigen::ArrayXf::Random(n), b(n);
  bench::run(s, {.bytes = 8.0 * double(n)}, [&] {
    b = a;
    benchmark::DoNotOptimize(b.data());
  });
}

// ---- reductions, softmax, logsumexp over the last axis of [rows, cols] -----------------------------------
template <int Which>
void BM_rowwise_loom(benchmark::State& s, bool bwd) {
  const auto rows = std::size_t(s.range(0)), cols = std::size_t(s.range(1));
  Var<Shape<dyn, dyn>> x({rows, cols}, 3);
  const double n = double(rows * cols);
  auto go = [&](auto&& p, double flops) { fwd_or_bwd(s, p, bwd, {.flops = flops * n, .bytes = (bwd ? 3.0 : 1.0) * 4 * n}); };
  if constexpr (Which == 0) go(compile(sum<1>(x.v)), 1);
  else if constexpr (Which == 1) go(compile(softmax<-1>(x.v)), 5);
  else go(compile(logsumexp<-1>(x.v)), 4);
}

// ---- matmul [m, k] x [k, n] and batched matmul ------------------------------------------------------------------
void BM_matmul_loom(benchmark::State& s, bool bwd) {
  const auto m = std::size_t(s.range(0)), k = std::size_t(s.range(1)), n = std::size_t(s.range(2));
  Var<Shape<dyn, dyn>> a({m, k}, 1), b({k, n}, 2);
  auto p = compile(matmul(a.v, b.v));
  fwd_or_bwd(s, p, bwd, {.flops = (bwd ? 3 : 1) * bench::matmul_flops(m, n, k), .bytes = 4.0 * (m * k + k * n + m * n)});
}
void BM_matmul_eigen(benchmark::State& s, bool bwd) {
  const auto m = Eigen::Index(s.range(0)), k = Eigen::Index(s.range(1)), n = Eigen::Index(s.range(2));
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  M a = M::Random(m, k), b = M::Random(k, n), c(m, n), ga = M::Zero(m, k), gb = M::Zero(k, n), g = M::Ones(m, n);
  bench::run(s, {.flops = (bwd ? 3 : 1) * bench::matmul_flops(m, n, k), .bytes = 4.0 * double(m * k + k * n + m * n)}, [&] {
    c.noalias() = a * b;
    if (bwd) {
      ga.noalias() += g * b.transpose();
      gb.noalias() += a.transpose() * g;
    }
    benchmark::DoNotOptimize(c.data());
  });
}
void BM_bmm_loom(benchmark::State& s, bool bwd) {
  const auto bt = std::size_t(s.range(0)), m = std::size_t(s.range(1)), k = std::size_t(s.range(2));
  Var<Shape<dyn, dyn, dyn>> a({bt, m, k}, 1), b({bt, k, m}, 2);
  auto p = compile(matmul(a.v, b.v));
  fwd_or_bwd(s, p, bwd, {.flops = (bwd ? 3 : 1) * bt * bench::matmul_flops(m, m, k), .bytes = 4.0 * bt * (2 * m * k + m * m)});
}

// ---- conv2d 3x3 (padding 1), max_pool2d 2x2, batch norm, layer norm ---------------------------------------------
// Path: the host's choice (0), or forced: the direct kernels (1), Winograd F(2x2, 3x3) (2) or F(4x4, 3x3) (4).
template <std::size_t Cin, std::size_t Cout, std::size_t Path = 0>
void BM_conv2d_loom(benchmark::State& s, bool bwd) {
  const auto n = std::size_t(s.range(0)), hw = std::size_t(s.range(1));
  Var<Shape<dyn, Cin, dyn, dyn>> x({n, Cin, hw, hw});
  auto w = rnd<Shape<Cout, Cin, 3, 3>>(2);
  auto p = compile(conv2d<1, 1>(x.v, w));
  host::winograd_conv() = Path != 1;
  host::winograd_tile() = Path == 1 ? 0 : Path;
  fwd_or_bwd(s, p, bwd, {.flops = (bwd ? 3 : 1) * bench::conv2d_flops(n, Cin, Cout, hw, hw, 3, 3),
                         .bytes = 4.0 * n * (Cin + Cout) * hw * hw});
  host::winograd_conv() = true;
  host::winograd_tile() = 0;
}
/// The same 3x3 convolution written by hand on Eigen (no framework): each sample lowered by im2col to a
/// [C 9, H W] matrix and multiplied by the [O, C 9] weights (Caffe's lowering, Eigen's GEMM); the
/// backward (seeded with ones, as loom's rows) adds the weight gradient G col^T and scatters W^T G back
/// by col2im into the input gradient.
template <std::size_t Cin, std::size_t Cout>
void BM_conv2d_eigen(benchmark::State& s, bool bwd) {
  const auto n = Eigen::Index(s.range(0)), hw = Eigen::Index(s.range(1));
  constexpr Eigen::Index C = Cin, O = Cout, K = 3;
  const Eigen::Index HW = hw * hw;
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  M x = M::Random(n, C * HW), w = M::Random(O, C * K * K), y(n, O * HW), gx = M::Zero(n, C * HW), gw = M::Zero(O, C * K * K);
  M col(C * K * K, HW), gcol(C * K * K, HW);
  const M g = M::Ones(O, HW);
  // Row (c, ki, kj) of col, output row oh: input row oh + ki - 1, columns [lo, hi) of the output valid
  // (input column ow + kj - 1 inside the plane); f(segment of col, segment of the plane, length).
  auto rows = [&](auto&& f) {
    for (Eigen::Index c = 0; c < C; ++c)
      for (Eigen::Index ki = 0; ki < K; ++ki)
        for (Eigen::Index kj = 0; kj < K; ++kj) {
          const Eigen::Index r = (c * K + ki) * K + kj, lo = std::max<Eigen::Index>(0, 1 - kj), hi = std::min(hw, hw + 1 - kj);
          for (Eigen::Index oh = 0; oh < hw; ++oh) {
            const Eigen::Index ih = oh + ki - 1;
            f(r, oh * hw, ih >= 0 && ih < hw ? c * HW + ih * hw + lo + kj - 1 : -1, lo, hi);
          }
        }
  };
  bench::run(s, {.flops = (bwd ? 3 : 1) * bench::conv2d_flops(n, C, O, hw, hw, K, K), .bytes = 4.0 * n * (C + O) * HW}, [&] {
    for (Eigen::Index i = 0; i < n; ++i) {
      const float* xi = x.row(i).data();
      rows([&](Eigen::Index r, Eigen::Index at, Eigen::Index src, Eigen::Index lo, Eigen::Index hi) {
        float* d = col.row(r).data() + at;
        if (src < 0) return (void)std::fill_n(d, hw, 0.0f);
        std::fill_n(d, lo, 0.0f);
        std::copy_n(xi + src, hi - lo, d + lo);
        std::fill(d + hi, d + hw, 0.0f);
      });
      Eigen::Map<M> yi(y.row(i).data(), O, HW);
      yi.noalias() = w * col;
      if (bwd) {
        gw.noalias() += g * col.transpose();
        gcol.noalias() = w.transpose() * g;
        float* gxi = gx.row(i).data();
        rows([&](Eigen::Index r, Eigen::Index at, Eigen::Index src, Eigen::Index lo, Eigen::Index hi) {
          if (src < 0) return;
          Eigen::Map<Eigen::ArrayXf>(gxi + src, hi - lo) += Eigen::Map<const Eigen::ArrayXf>(gcol.row(r).data() + at + lo, hi - lo);
        });
      }
    }
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(gx.data());
  });
}
void BM_maxpool_loom(benchmark::State& s, bool bwd) {
  const auto n = std::size_t(s.range(0)), c = std::size_t(s.range(1)), hw = std::size_t(s.range(2));
  Var<Shape<dyn, dyn, dyn, dyn>> x({n, c, hw, hw}, 4);
  auto p = compile(max_pool2d<2>(x.v));
  fwd_or_bwd(s, p, bwd, {.flops = double(n * c * hw * hw), .bytes = 4.0 * 1.25 * double(n * c * hw * hw)});
}
template <std::size_t C>
void BM_batchnorm_loom(benchmark::State& s, bool bwd) {
  const auto n = std::size_t(s.range(0)), hw = std::size_t(s.range(1));
  Generator g(5);
  nn::BatchNorm2d<C> bn(g);
  Var<Shape<dyn, C, dyn, dyn>> x({n, C, hw, hw}, 6);
  auto p = compile(bn(x.v));
  fwd_or_bwd(s, p, bwd, {.flops = 8.0 * double(n * C * hw * hw), .bytes = 4.0 * 2 * double(n * C * hw * hw)});
}
template <std::size_t D>
void BM_layernorm_loom(benchmark::State& s, bool bwd) {
  const auto rows = std::size_t(s.range(0));
  Generator g(5);
  nn::LayerNorm<D> ln(g);
  Var<Shape<dyn, D>> x({rows, D}, 6);
  auto p = compile(ln(x.v));
  fwd_or_bwd(s, p, bwd, {.flops = 8.0 * double(rows * D), .bytes = 4.0 * 2 * double(rows * D)});
}

// ---- optimizer updates over n parameters --------------------------------------------------------------------
template <std::size_t N, bool Adam>
void BM_update_loom(benchmark::State& s) {
  auto w = rnd<Shape<N>>(1);
  Generator g(2);
  const_cast<Tensor<float, Shape<N>>&>(w.grad()).assign(uniform<float, Shape<N>>(g, -1, 1));
  std::vector<nn::ParamRef<float>> ps{{"w", w.value().data(), w.grad().data(), N}};
  auto go = [&](auto&& opt) {
    // SGD with momentum reads w, g, buf and writes w, buf; Adam reads w, g, m, v and writes w, m, v
    bench::run(s, {.flops = (Adam ? 12.0 : 3.0) * N, .bytes = (Adam ? 7.0 : 5.0) * 4 * N}, [&] { opt.step(); });
  };
  if constexpr (Adam) go(optim::Adam<float>(ps, {.lr = 1e-3}));
  else go(optim::SGD<float>(ps, {.lr = 0.01, .momentum = 0.9}));
}

// ---- MLP 784-256-10 training step (forward, cross-entropy, backward, SGD) ----------------------------------------
using MLP = nn::Sequential<nn::Linear<784, 256>, nn::ReLU, nn::Linear<256, 10>>;
/// Forward, weight gradients, and the hidden layer's input gradient (the data needs none).
double mlp_flops(double b) { return 2 * bench::matmul_flops(b, 256, 784) + 3 * bench::matmul_flops(b, 10, 256); }

void BM_mlp_step_loom(benchmark::State& s) {
  const auto b = std::size_t(s.range(0));
  Generator g(1);
  MLP net(g);
  auto xt = Var<Shape<dyn, 784>>::random({b, 784}, 1);
  auto x = input<float, Shape<dyn, 784>>();  // data: no gradient, as in the references
  x.bind(xt);
  Tensor<std::int64_t, Shape<dyn>> labels({b});
  for (std::size_t i = 0; i < b; ++i) labels(i) = std::int64_t(i % 10);
  auto y = input<std::int64_t, Shape<dyn>>();
  y.bind(labels);
  auto p = compile(nn::cross_entropy(net(x), y));
  optim::SGD<float> opt(nn::parameters(net), {.lr = 0.01});
  bench::step(s, p, opt, {.flops = mlp_flops(double(b))});
}
/// The same step written by hand on Eigen (row-major, no framework): the no-overhead limit.
void BM_mlp_step_eigen(benchmark::State& s) {
  const auto b = Eigen::Index(s.range(0));
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using V = Eigen::RowVectorXf;
  M x = M::Random(b, 784), w1 = M::Random(784, 256) * 0.05f, w2 = M::Random(256, 10) * 0.05f;
  V b1 = V::Zero(256), b2 = V::Zero(10);
  M h(b, 256), z(b, 10), dz(b, 10), dh(b, 256), gw1(784, 256), gw2(256, 10);
  V gb1(256), gb2(10);
  auto labels = std::vector<int>(static_cast<std::size_t>(b));
  for (Eigen::Index i = 0; i < b; ++i) labels[std::size_t(i)] = int(i % 10);
  const float lr = 0.01f;
  bench::run(s, {.flops = mlp_flops(double(b))}, [&] {
    h.noalias() = x * w1;
    h = (h.rowwise() + b1).cwiseMax(0.0f);
    z.noalias() = h * w2;
    z.rowwise() += b2;
    // softmax cross-entropy (mean): dz = (softmax(z) - onehot) / b
    for (Eigen::Index i = 0; i < b; ++i) {
      auto r = z.row(i);
      const float mx = r.maxCoeff();
      dz.row(i) = (r.array() - mx).exp();
      dz.row(i) /= dz.row(i).sum();
      dz(i, labels[std::size_t(i)]) -= 1.0f;
    }
    dz /= float(b);
    gw2.noalias() = h.transpose() * dz;
    gb2 = dz.colwise().sum();
    dh.noalias() = dz * w2.transpose();
    dh = (h.array() > 0.0f).select(dh, 0.0f);
    gw1.noalias() = x.transpose() * dh;
    gb1 = dh.colwise().sum();
    w1 -= lr * gw1, w2 -= lr * gw2, b1 -= lr * gb1, b2 -= lr * gb2;
    benchmark::DoNotOptimize(w1.data());
  });
}

}  // namespace

// Registration: small / medium / large for every family; "fwd" and "bwd" (forward + backward) of each.
namespace {
using Sizes = std::vector<std::vector<std::int64_t>>;
template <class F>
void both(const std::string& op, const std::string& backend, F f, const Sizes& sizes) {
  for (const bool bwd : {false, true}) {
    auto* b = benchmark::RegisterBenchmark(("BM_" + op + (bwd ? "_bwd_" : "_fwd_") + backend).c_str(),
                                           [f, bwd](benchmark::State& s) { f(s, bwd); });
    for (const auto& a : sizes) b->Args(a);
  }
}
void register_all() {
  const Sizes vec = {{1000}, {100000}, {10000000}}, rows = {{64, 128}, {512, 512}, {2048, 1024}};
  const Sizes mm = {{64, 64, 64}, {256, 256, 256}, {1024, 1024, 1024}, {64, 784, 256}};
  const Sizes img = {{1, 28}, {32, 28}, {64, 56}};
  both("chain", LOOM_BENCH_BACKEND, BM_chain_fwd_loom, vec);
  both("chain", "eigen", BM_chain_fwd_eigen, vec);
  benchmark::RegisterBenchmark("BM_copy_fwd_eigen", BM_copy_eigen)->Arg(10000000);
  benchmark::RegisterBenchmark("BM_chainstreams_bwd_plain", BM_streams_plain)->Arg(10000000);
  both("sum", LOOM_BENCH_BACKEND, BM_rowwise_loom<0>, rows);
  both("softmax", LOOM_BENCH_BACKEND, BM_rowwise_loom<1>, rows);
  both("logsumexp", LOOM_BENCH_BACKEND, BM_rowwise_loom<2>, rows);
  both("matmul", LOOM_BENCH_BACKEND, BM_matmul_loom, mm);
  both("matmul", "eigen", BM_matmul_eigen, mm);
  both("bmm", LOOM_BENCH_BACKEND, BM_bmm_loom, {{8, 32, 32}, {16, 128, 64}, {16, 512, 64}});
  both("conv2d", LOOM_BENCH_BACKEND, BM_conv2d_loom<16, 32>, img);
  both("conv2d", "eigen", BM_conv2d_eigen<16, 32>, img);
  // the host's paths forced, to compare them (3x3 convolutions take Winograd where it applies)
  both("conv2ddirect", LOOM_BENCH_BACKEND, BM_conv2d_loom<16, 32, 1>, {{32, 28}});
  both("conv2dwinograd2", LOOM_BENCH_BACKEND, BM_conv2d_loom<16, 32, 2>, {{32, 28}});
  both("conv2dwinograd4", LOOM_BENCH_BACKEND, BM_conv2d_loom<16, 32, 4>, {{32, 28}});
  // the two convolutions of the Fashion-MNIST CNN (examples/fashion_mnist.cpp --model cnn), batch 64
  both("conv2d1to32", LOOM_BENCH_BACKEND, BM_conv2d_loom<1, 32>, {{64, 28}});
  both("conv2d32to64", LOOM_BENCH_BACKEND, BM_conv2d_loom<32, 64>, {{64, 14}});
  both("conv2d32to64direct", LOOM_BENCH_BACKEND, BM_conv2d_loom<32, 64, 1>, {{64, 14}});
  both("conv2d32to64winograd2", LOOM_BENCH_BACKEND, BM_conv2d_loom<32, 64, 2>, {{64, 14}});
  both("conv2d32to64winograd4", LOOM_BENCH_BACKEND, BM_conv2d_loom<32, 64, 4>, {{64, 14}});
  both("maxpool", LOOM_BENCH_BACKEND, BM_maxpool_loom, {{1, 16, 28}, {32, 32, 28}, {64, 64, 56}});
  both("batchnorm", LOOM_BENCH_BACKEND, BM_batchnorm_loom<32>, img);
  both("layernorm", LOOM_BENCH_BACKEND, BM_layernorm_loom<256>, {{16}, {1024}, {16384}});
  benchmark::RegisterBenchmark("BM_sgd_step_" LOOM_BENCH_BACKEND "/1000", BM_update_loom<1000, false>);
  benchmark::RegisterBenchmark("BM_sgd_step_" LOOM_BENCH_BACKEND "/100000", BM_update_loom<100000, false>);
  benchmark::RegisterBenchmark("BM_sgd_step_" LOOM_BENCH_BACKEND "/10000000", BM_update_loom<10000000, false>);
  benchmark::RegisterBenchmark("BM_adam_step_" LOOM_BENCH_BACKEND "/1000", BM_update_loom<1000, true>);
  benchmark::RegisterBenchmark("BM_adam_step_" LOOM_BENCH_BACKEND "/100000", BM_update_loom<100000, true>);
  benchmark::RegisterBenchmark("BM_adam_step_" LOOM_BENCH_BACKEND "/10000000", BM_update_loom<10000000, true>);
  benchmark::RegisterBenchmark("BM_mlp_step_" LOOM_BENCH_BACKEND, BM_mlp_step_loom)->Arg(1)->Arg(64)->Arg(512);
  benchmark::RegisterBenchmark("BM_mlp_step_eigen", BM_mlp_step_eigen)->Arg(1)->Arg(64)->Arg(512);
}
}  // namespace

LOOM_BENCH_COUNT_ALLOCATIONS

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// The LibTorch side of bench/ops.cpp: the same work, named BM_<op>_<fwd|bwd>_torch, eager mode with
// autograd ("bwd" = forward + backward seeded with ones, as loom's). Built when find_package(Torch)
// finds Debian's libtorch-dev. Threads: OMP_NUM_THREADS (bench/compare pins it).
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdlib>

namespace {

torch::Tensor rnd(at::IntArrayRef shape, bool grad) { return (torch::rand(shape) * 2 - 1).requires_grad_(grad); }

template <class F>
void run(benchmark::State& s, F&& f) {
  f();
  for (auto _ : s) {
    f();
    benchmark::ClobberMemory();
  }
}
/// Forward only (no autograd recording), or forward + backward.
template <class F>
void fwd_or_bwd(benchmark::State& s, bool bwd, F&& forward) {
  if (!bwd) {
    torch::NoGradGuard ng;
    run(s, [&] { benchmark::DoNotOptimize(forward().data_ptr()); });
  } else {
    run(s, [&] {
      auto y = forward();
      y.backward(torch::ones_like(y));
    });
  }
}

void BM_chain_torch(benchmark::State& s, bool bwd) {
  const auto n = s.range(0);
  auto a = rnd({n}, true), b = rnd({n}, true), c = rnd({n}, true);
  fwd_or_bwd(s, bwd, [&] { return torch::tanh(a * b + c) * 0.5 + a; });
}
void BM_rowwise_torch(benchmark::State& s, bool bwd, int which) {
  auto x = rnd({s.range(0), s.range(1)}, true);
  fwd_or_bwd(s, bwd, [&] {
    if (which == 0) return x.sum(1);
    if (which == 1) return torch::softmax(x, -1);
    return torch::logsumexp(x, -1);
  });
}
void BM_matmul_torch(benchmark::State& s, bool bwd) {
  auto a = rnd({s.range(0), s.range(1)}, true), b = rnd({s.range(1), s.range(2)}, true);
  fwd_or_bwd(s, bwd, [&] { return torch::mm(a, b); });
}
void BM_bmm_torch(benchmark::State& s, bool bwd) {
  auto a = rnd({s.range(0), s.range(1), s.range(2)}, true), b = rnd({s.range(0), s.range(2), s.range(1)}, true);
  fwd_or_bwd(s, bwd, [&] { return torch::bmm(a, b); });
}
template <std::int64_t Cin, std::int64_t Cout>
void conv2d_torch(benchmark::State& s, bool bwd) {
  auto x = rnd({s.range(0), Cin, s.range(1), s.range(1)}, true), w = rnd({Cout, Cin, 3, 3}, true);
  fwd_or_bwd(s, bwd, [&] { return torch::conv2d(x, w, {}, 1, 1); });
}
void BM_conv2d_torch(benchmark::State& s, bool bwd) { conv2d_torch<16, 32>(s, bwd); }
void BM_conv2d_torch_1to32(benchmark::State& s, bool bwd) { conv2d_torch<1, 32>(s, bwd); }  // the Fashion-MNIST CNN's two
void BM_conv2d_torch_32to64(benchmark::State& s, bool bwd) { conv2d_torch<32, 64>(s, bwd); }
void BM_maxpool_torch(benchmark::State& s, bool bwd) {
  auto x = rnd({s.range(0), s.range(1), s.range(2), s.range(2)}, true);
  fwd_or_bwd(s, bwd, [&] { return torch::max_pool2d(x, 2); });
}
void BM_batchnorm_torch(benchmark::State& s, bool bwd) {
  torch::nn::BatchNorm2d bn(32);
  auto x = rnd({s.range(0), 32, s.range(1), s.range(1)}, true);
  fwd_or_bwd(s, bwd, [&] { return bn(x); });
}
void BM_layernorm_torch(benchmark::State& s, bool bwd) {
  torch::nn::LayerNorm ln(torch::nn::LayerNormOptions({256}));
  auto x = rnd({s.range(0), 256}, true);
  fwd_or_bwd(s, bwd, [&] { return ln(x); });
}
void BM_update_torch(benchmark::State& s, bool adam) {
  auto w = rnd({s.range(0)}, true);
  w.mutable_grad() = torch::rand({s.range(0)});
  if (adam) {
    torch::optim::Adam opt({w}, torch::optim::AdamOptions(1e-3));
    run(s, [&] { opt.step(); });
  } else {
    torch::optim::SGD opt({w}, torch::optim::SGDOptions(0.01).momentum(0.9));
    run(s, [&] { opt.step(); });
  }
}
void BM_mlp_step_torch(benchmark::State& s) {
  const auto b = s.range(0);
  torch::nn::Sequential net(torch::nn::Linear(784, 256), torch::nn::ReLU(), torch::nn::Linear(256, 10));
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.01));
  auto x = torch::rand({b, 784});
  auto y = torch::arange(b) % 10;
  run(s, [&] {
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(x), y);
    loss.backward();
    opt.step();
  });
}

}  // namespace

BENCHMARK_CAPTURE(BM_chain_torch, fwd, false)->Name("BM_chain_fwd_torch")->Arg(1000)->Arg(100000)->Arg(10000000);
BENCHMARK_CAPTURE(BM_chain_torch, bwd, true)->Name("BM_chain_bwd_torch")->Arg(1000)->Arg(100000)->Arg(10000000);
#define TORCH_ROWWISE(op, which)                                                                                       \
  BENCHMARK_CAPTURE(BM_rowwise_torch, fwd, false, which)->Name("BM_" op "_fwd_torch")->Args({64, 128})->Args({512, 512})->Args({2048, 1024}); \
  BENCHMARK_CAPTURE(BM_rowwise_torch, bwd, true, which)->Name("BM_" op "_bwd_torch")->Args({64, 128})->Args({512, 512})->Args({2048, 1024});
TORCH_ROWWISE("sum", 0)
TORCH_ROWWISE("softmax", 1)
TORCH_ROWWISE("logsumexp", 2)
#define TORCH_MATMUL_SIZES ->Args({64, 64, 64})->Args({256, 256, 256})->Args({1024, 1024, 1024})->Args({64, 784, 256})
BENCHMARK_CAPTURE(BM_matmul_torch, fwd, false)->Name("BM_matmul_fwd_torch") TORCH_MATMUL_SIZES;
BENCHMARK_CAPTURE(BM_matmul_torch, bwd, true)->Name("BM_matmul_bwd_torch") TORCH_MATMUL_SIZES;
BENCHMARK_CAPTURE(BM_bmm_torch, fwd, false)->Name("BM_bmm_fwd_torch")->Args({8, 32, 32})->Args({16, 128, 64})->Args({16, 512, 64});
BENCHMARK_CAPTURE(BM_bmm_torch, bwd, true)->Name("BM_bmm_bwd_torch")->Args({8, 32, 32})->Args({16, 128, 64})->Args({16, 512, 64});
BENCHMARK_CAPTURE(BM_conv2d_torch, fwd, false)->Name("BM_conv2d_fwd_torch")->Args({1, 28})->Args({32, 28})->Args({64, 56});
BENCHMARK_CAPTURE(BM_conv2d_torch, bwd, true)->Name("BM_conv2d_bwd_torch")->Args({1, 28})->Args({32, 28})->Args({64, 56});
BENCHMARK_CAPTURE(BM_conv2d_torch_1to32, fwd, false)->Name("BM_conv2d1to32_fwd_torch")->Args({64, 28});
BENCHMARK_CAPTURE(BM_conv2d_torch_1to32, bwd, true)->Name("BM_conv2d1to32_bwd_torch")->Args({64, 28});
BENCHMARK_CAPTURE(BM_conv2d_torch_32to64, fwd, false)->Name("BM_conv2d32to64_fwd_torch")->Args({64, 14});
BENCHMARK_CAPTURE(BM_conv2d_torch_32to64, bwd, true)->Name("BM_conv2d32to64_bwd_torch")->Args({64, 14});
BENCHMARK_CAPTURE(BM_maxpool_torch, fwd, false)->Name("BM_maxpool_fwd_torch")->Args({1, 16, 28})->Args({32, 32, 28})->Args({64, 64, 56});
BENCHMARK_CAPTURE(BM_maxpool_torch, bwd, true)->Name("BM_maxpool_bwd_torch")->Args({1, 16, 28})->Args({32, 32, 28})->Args({64, 64, 56});
BENCHMARK_CAPTURE(BM_batchnorm_torch, fwd, false)->Name("BM_batchnorm_fwd_torch")->Args({1, 28})->Args({32, 28})->Args({64, 56});
BENCHMARK_CAPTURE(BM_batchnorm_torch, bwd, true)->Name("BM_batchnorm_bwd_torch")->Args({1, 28})->Args({32, 28})->Args({64, 56});
BENCHMARK_CAPTURE(BM_layernorm_torch, fwd, false)->Name("BM_layernorm_fwd_torch")->Arg(16)->Arg(1024)->Arg(16384);
BENCHMARK_CAPTURE(BM_layernorm_torch, bwd, true)->Name("BM_layernorm_bwd_torch")->Arg(16)->Arg(1024)->Arg(16384);
BENCHMARK_CAPTURE(BM_update_torch, sgd, false)->Name("BM_sgd_step_torch")->Arg(1000)->Arg(100000)->Arg(10000000);
BENCHMARK_CAPTURE(BM_update_torch, adam, true)->Name("BM_adam_step_torch")->Arg(1000)->Arg(100000)->Arg(10000000);
BENCHMARK(BM_mlp_step_torch)->Name("BM_mlp_step_torch")->Arg(1)->Arg(64)->Arg(512);

int main(int argc, char** argv) {
  if (const char* t = std::getenv("OMP_NUM_THREADS")) torch::set_num_threads(std::atoi(t));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

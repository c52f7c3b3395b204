// GPU figures for docs/performance.md (run on a machine with a GPU; nothing here runs in CI):
//   1. a fused elementwise chain tanh(a * b + c) * 0.5 + a on 1e8 floats: effective bandwidth as a
//      fraction of a device-to-device copy of the same bytes;
//   2. matmul through a loom program against cublasSgemm called directly on the same buffers;
//   3. an MLP 784-256-10 training step (forward, cross-entropy, backward, Adam) per batch size;
//   4. causal multi-head attention, forward and forward + backward, at three sizes, on CUDA's tiled kernels
//      and on the portable ones;
//   5. where each step's time goes: forward, forward + backward and the whole step (Adam) of that MLP at
//      batch 512 and of examples/fashion_mnist's CNN at batch 64, each timed alone.
// `bench_gpu --profile-step` skips all that and runs two CNN steps and two MLP steps with only the second
// of each inside cudaProfilerStart/Stop, for Nsight Compute's per-kernel times:
//   ncu --clock-control none --profile-from-start off --metrics gpu__time_duration.sum --csv bench_gpu --profile-step
// Build: nvcc -std=c++20 -O3 --expt-relaxed-constexpr -arch=sm_90 -Iinclude -I/usr/include/eigen3
//        bench/gpu.cu -lcublas -o gpu_bench     (CMake: the bench_gpu target under -DLOOM_BUILD_BENCH=ON)
#include <loom/loom.hpp>

#include <cuda_profiler_api.h>

#include <chrono>
#include <cstdio>
#include <cstring>

using gpu = loom::cuda;
using namespace loom;

namespace {
/// Milliseconds per call of f (after one warm-up call), timed with CUDA events on the current stream.
template <class F>
double time_ms(F&& f, int iters) {
  f();
  device::synchronize();
  cudaEvent_t a, b;
  LOOM_CUDA_CHECK(cudaEventCreate(&a));
  LOOM_CUDA_CHECK(cudaEventCreate(&b));
  LOOM_CUDA_CHECK(cudaEventRecord(a, device::current_stream()));
  for (int i = 0; i < iters; ++i) f();
  LOOM_CUDA_CHECK(cudaEventRecord(b, device::current_stream()));
  LOOM_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  LOOM_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  (void)cudaEventDestroy(a);
  (void)cudaEventDestroy(b);
  return double(ms) / iters;
}

void chain_bandwidth() {
  constexpr std::size_t n = 100'000'000;
  Generator g(1);
  auto make = [&] { return uniform<float, Shape<dyn>, gpu>(g, -1, 1, {n}); };
  const auto ta = make(), tb = make(), tc = make();
  auto a = input<float, Shape<dyn>, gpu>(), b = input<float, Shape<dyn>, gpu>(), c = input<float, Shape<dyn>, gpu>();
  auto p = compile(tanh(a * b + c) * 0.5f + a);
  const double fused = time_ms([&] { p.forward(ta, tb, tc); }, 20);
  Tensor<float, Shape<dyn>, gpu> dst({n});
  const double copy = time_ms([&] {
    LOOM_CUDA_CHECK(cudaMemcpyAsync(dst.data(), ta.data(), n * sizeof(float), cudaMemcpyDeviceToDevice, device::current_stream()));
  }, 20);
  const double fused_gbs = 4.0 * n * sizeof(float) / fused / 1e6, copy_gbs = 2.0 * n * sizeof(float) / copy / 1e6;
  std::printf("fused chain, 1e8 floats (3 reads + 1 write): %.3f ms, %.0f GB/s; device-to-device copy %.3f ms, %.0f GB/s; "
              "fraction %.2f\n", fused, fused_gbs, copy, copy_gbs, fused_gbs / copy_gbs);
}

/// With tf32: loom with loom::device::tf32() on, cuBLAS with CUBLAS_TF32_TENSOR_OP_MATH.
void matmul_vs_cublas(std::size_t m, std::size_t k, std::size_t n, bool tf32 = false) {
  device::tf32() = tf32;
  Generator g(2);
  const auto ta = uniform<float, Shape<dyn, dyn>, gpu>(g, -1, 1, {m, k});
  const auto tb = uniform<float, Shape<dyn, dyn>, gpu>(g, -1, 1, {k, n});
  auto a = input<float, Shape<dyn, dyn>, gpu>(), b = input<float, Shape<dyn, dyn>, gpu>();
  auto p = compile(matmul(a, b));
  const double loom_ms = time_ms([&] { p.forward(ta, tb); }, 20);
  Tensor<float, Shape<dyn, dyn>, gpu> c({m, n});
  cublasHandle_t h;
  LOOM_CUDA_CHECK(cublasCreate(&h));
  LOOM_CUDA_CHECK(cublasSetStream(h, device::current_stream()));
  if (tf32) LOOM_CUDA_CHECK(cublasSetMathMode(h, CUBLAS_TF32_TENSOR_OP_MATH));
  const float one = 1, zero = 0;
  const double cublas_ms = time_ms([&] {  // row-major C = A B as column-major C^T = B^T A^T
    LOOM_CUDA_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, int(n), int(m), int(k), &one, tb.data(), int(n), ta.data(), int(k),
                                &zero, c.data(), int(n)));
  }, 20);
  (void)cublasDestroy(h);
  const double flop = 2.0 * double(m) * double(k) * double(n);
  device::tf32() = false;
  std::printf("matmul %zux%zux%zu%s: loom %.3f ms (%.1f TFLOP/s), cuBLAS %.3f ms (%.1f TFLOP/s), loom/cuBLAS time %.2f\n", m, k, n, tf32 ? " (TF32)" : "",
              loom_ms, flop / loom_ms / 1e9, cublas_ms, flop / cublas_ms / 1e9, loom_ms / cublas_ms);
}

/// Causal attention, Heads heads of Dh features, on q, k, v [B, T, Heads * Dh]: the forward and the forward +
/// backward of sum(attention(q, k, v)) with gradients for q, k and v (bench/gpu_torch.py times PyTorch's
/// scaled_dot_product_attention on the same shapes).
template <std::size_t Heads, std::size_t Dh>
void attention_step(std::size_t B, std::size_t T) {
  constexpr std::size_t D = Heads * Dh;
  using S = Shape<dyn, dyn, D>;
  Generator g(5);
  auto make = [&] { return normal<float, S, gpu>(g, 0, 1, {B, T, D}); };
  const auto vq = make(), vk = make(), vv = make();
  const Tensor<float, S, gpu> gq({B, T, D}), gk({B, T, D}), gv({B, T, D});
  Variable<float, S, gpu> q, k, v;
  q.bind(vq, gq);
  k.bind(vk, gk);
  v.bind(vv, gv);
  auto p = compile(sum(attention<Heads, true>(q, k, v)));
  const int iters = T >= 1024 ? 5 : 20;
  const double flop = 2.0 * 2.0 * double(B * Heads * Dh) * double(T) * double(T) / 2;  // causal: half of QK^T and PV
  for (const bool tiled : {true, false}) {  // CUDA's tiled kernels, then the portable thread-per-row ones
    device::tiled_attention() = tiled;
    const double f = time_ms([&] { p.forward(); }, iters);
    const double fb = time_ms([&] { p.forward(); p.backward(); }, iters);
    std::printf("attention (causal, %s kernels) B %zu, T %zu, %zu heads of %zu: forward %.3f ms (%.2f TFLOP/s), forward + "
                "backward %.3f ms (%.2f TFLOP/s counting 3.5x the forward's work)\n", tiled ? "tiled" : "portable", B, T, Heads,
                Dh, f, flop / f / 1e9, fb, 3.5 * flop / fb / 1e9);
  }
  device::tiled_attention() = true;
}

using MLP = nn::Sequential<nn::Linear<784, 256>, nn::ReLU, nn::Linear<256, 10>>;
using CNN = nn::Sequential<nn::Conv2d<1, 32, 3, 1, 1>, nn::BatchNorm2d<32>, nn::ReLU, nn::MaxPool2d<2>,
                           nn::Conv2d<32, 64, 3, 1, 1>, nn::BatchNorm2d<64>, nn::ReLU, nn::MaxPool2d<2>, nn::Flatten,
                           nn::Linear<64 * 7 * 7, 128>, nn::ReLU, nn::Dropout<250>, nn::Linear<128, 10>>;

/// HostNet on the GPU (initialized from `seed`), its compiled cross-entropy step, Adam, and one batch of
/// inputs of shape S uniform in [lo, hi) with labels i % 10: f(step, opt, x, y).
template <class HostNet, class S, class F>
void with_training(std::uint64_t seed, Dims<S::rank> dims, float lo, float hi, F&& f) {
  Generator g(seed);
  nn::on_device_t<HostNet, gpu> net(g);
  auto x = input<float, S, gpu>();
  auto y = input<std::int64_t, Shape<dyn>, gpu>();
  auto step = compile(nn::cross_entropy(net(x), y));
  optim::Adam<float, gpu> opt(nn::parameters<float, gpu>(net), {.lr = 1e-3});
  const auto xb = uniform<float, S, gpu>(g, lo, hi, dims);
  Tensor<std::int64_t, Shape<dyn>> yh({dims[0]});
  for (std::size_t i = 0; i < dims[0]; ++i) yh(i) = std::int64_t(i % 10);
  f(step, opt, xb, yh.template to<gpu>());
}

void mlp_step(std::size_t batch) {
  with_training<MLP, Shape<dyn, 784>>(3, {batch, 784}, 0, 1, [&](auto& step, auto& opt, const auto& xb, const auto& yb) {
    auto train_step = [&] {
      step.forward(xb, yb);
      step.backward();
      opt.step();
      opt.zero_grad();
    };
    train_step();  // the first step sizes the buffers; the count below is of the steady state
    const auto before = device::allocator_stats().system_allocs;
    const double ms = time_ms(train_step, 200);
    std::printf("MLP 784-256-10 step (Adam), batch %zu: %.1f us; device allocations in the timed steps: %zu\n", batch,
                ms * 1e3, device::allocator_stats().system_allocs - before);
  });
}

/// Forward, forward + backward and the whole Adam step of HostNet on inputs of shape S (batch first), each
/// timed alone; with profile, one step and then a second inside cudaProfilerStart/Stop.
template <class HostNet, class S>
void breakdown(const char* name, Dims<S::rank> dims, bool profile) {
  with_training<HostNet, S>(4, dims, -1, 1, [&](auto& step, auto& opt, const auto& xb, const auto& yb) {
    auto full = [&] {
      step.forward(xb, yb);
      step.backward();
      opt.step_and_zero_grad();
    };
    if (profile) {
      full();
      device::synchronize();
      LOOM_CUDA_CHECK(cudaProfilerStart());
      full();
      device::synchronize();
      LOOM_CUDA_CHECK(cudaProfilerStop());
      return;
    }
    full();  // the steady state: count the launches of loom's own kernels (cuBLAS's are not counted)
    const auto k0 = backend::device::kernel_stats().kernels;
    full();
    const auto kernels = backend::device::kernel_stats().kernels - k0;
    const double f = time_ms([&] { step.forward(xb, yb); }, 100);
    const double fb = time_ms([&] { step.forward(xb, yb); step.backward(); opt.zero_grad(); }, 100);
    const double all = time_ms(full, 100);
    // The host's side alone: the same step's calls timed on the host clock without waiting for the GPU
    // between steps (the launch queue fills, so this is the larger of the host's and the GPU's time).
    device::synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 100; ++i) full();
    const double host_enqueue = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 100;
    device::synchronize();
    std::printf("%s, batch %zu: forward %.1f us, forward + backward (+ zero_grad) %.1f us, step (Adam) %.1f us; step's calls on the host "
                "clock without waiting %.1f us; loom kernels per step %zu\n", name, dims[0], f * 1e3, fb * 1e3, all * 1e3,
                host_enqueue * 1e3, std::size_t(kernels));
  });
}
}  // namespace

int main(int argc, char** argv) {
  const bool profile = argc > 1 && std::strcmp(argv[1], "--profile-step") == 0;
  if (!device::gpu_available()) {
    std::printf("SKIPPED: no CUDA device is visible\n");
    return 77;
  }
  cudaDeviceProp prop{};
  LOOM_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s\n", prop.name);
  if (profile) {
    breakdown<CNN, Shape<dyn, 1, 28, 28>>("CNN", {64, 1, 28, 28}, true);
    breakdown<MLP, Shape<dyn, 784>>("MLP", {512, 784}, true);
    return 0;
  }
  chain_bandwidth();
  for (std::size_t s : {1024, 4096}) matmul_vs_cublas(s, s, s);
  matmul_vs_cublas(64, 784, 256);
  for (std::size_t s : {1024, 4096}) matmul_vs_cublas(s, s, s, true);
  for (std::size_t b : {1, 64, 512}) mlp_step(b);
  attention_step<4, 32>(32, 128);  // examples/char_lm's Transformer: width 128, 4 heads, 128 positions
  attention_step<8, 64>(8, 256);
  attention_step<8, 64>(8, 1024);
  breakdown<MLP, Shape<dyn, 784>>("MLP 784-256-10", {512, 784}, false);
  breakdown<CNN, Shape<dyn, 1, 28, 28>>("CNN (examples/fashion_mnist)", {64, 1, 28, 28}, false);
}

// loom/bench.hpp — benchmarking loom programs with Google Benchmark (link benchmark::benchmark; this
// header is not included by loom.hpp). Times the forward, the backward or a whole training step of any
// compiled expression and reports FLOP/s, bytes/s, arithmetic intensity and heap allocations per
// iteration as counters:
//
//   static void BM_gelu_fwd_loom(benchmark::State& s) {
//     const auto n = std::size_t(s.range(0));
//     auto x = loom::input<float, loom::Shape<loom::dyn>>();
//     loom::Tensor<float, loom::Shape<loom::dyn>> t({n});
//     x.bind(t);
//     auto p = loom::compile(loom::gelu(x));
//     loom::bench::forward(s, p, {.flops = 20.0 * n, .bytes = 8.0 * n});
//   }
//   BENCHMARK(BM_gelu_fwd_loom)->RangeMultiplier(100)->Range(1000, 10'000'000);
//   LOOM_BENCH_COUNT_ALLOCATIONS  // once per program: counts heap allocations (optional)
//   BENCHMARK_MAIN();
//
// docs/benchmarking.md has the full guide.
#pragma once
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace loom::bench {

/// The work of one iteration, by the caller's model of the op: floating-point operations and bytes
/// that must cross the memory bus at least once.
struct Cost {
  double flops = 0;
  double bytes = 0;
};

/// Heap allocations seen so far (counted only in programs that expand LOOM_BENCH_COUNT_ALLOCATIONS).
inline std::atomic<std::size_t>& allocations() {
  static std::atomic<std::size_t> n{0};
  return n;
}
inline std::atomic<bool>& counting() {
  static std::atomic<bool> on{false};
  return on;
}

/// Sets the counters of a finished benchmark loop: FLOP/s and bytes/s (rates), FLOP/byte, and heap
/// allocations per iteration (0 in a planned steady state).
inline void report(benchmark::State& s, const Cost& c, std::size_t allocs) {
  const double it = static_cast<double>(s.iterations());
  if (c.flops > 0) s.counters["FLOP/s"] = benchmark::Counter(c.flops * it, benchmark::Counter::kIsRate);
  if (c.bytes > 0) s.counters["bytes/s"] = benchmark::Counter(c.bytes * it, benchmark::Counter::kIsRate);
  if (c.flops > 0 && c.bytes > 0) s.counters["FLOP/byte"] = c.flops / c.bytes;
  s.counters["allocs/iter"] = it > 0 ? static_cast<double>(allocs) / it : 0.0;
}

/// Runs `body` once to warm up (the program plans its buffers), then times it, counting allocations.
template <class Body>
void run(benchmark::State& s, const Cost& c, Body&& body) {
  body();
  const std::size_t before = allocations().load();
  counting() = true;
  for (auto _ : s) {
    body();
    benchmark::ClobberMemory();
  }
  counting() = false;
  report(s, c, allocations().load() - before);
}

/// Times program.forward().
template <class Program>
void forward(benchmark::State& s, Program& p, const Cost& c = {}) {
  run(s, c, [&] { benchmark::DoNotOptimize(p.forward().data()); });
}
/// Times program.backward() alone (the forward runs once before; gradients accumulate, which costs the
/// same as overwriting them).
template <class Program>
void backward(benchmark::State& s, Program& p, const Cost& c = {}) {
  p.forward();
  run(s, c, [&] { p.backward(); });
}
/// forward() then backward() — as Program::forward_backward() where the program has it (one loop for a
/// program that is one fused elementwise group).
template <class Program>
void forward_then_backward(Program& p) {
  if constexpr (requires { p.forward_backward(); }) {
    p.forward_backward();
  } else {
    p.forward();
    p.backward();
  }
}
/// Times forward + backward.
template <class Program>
void forward_backward(benchmark::State& s, Program& p, const Cost& c = {}) {
  run(s, c, [&] { forward_then_backward(p); });
}
/// Times a training step: forward, backward, the optimizer's update and clearing the gradients (in
/// the update's pass where the optimizer has step_and_zero_grad(), else a zero_grad() of its own).
template <class Program, class Optimizer>
void step(benchmark::State& s, Program& p, Optimizer& opt, const Cost& c = {}) {
  opt.zero_grad();
  run(s, c, [&] {
    forward_then_backward(p);
    if constexpr (requires { opt.step_and_zero_grad(); }) {
      opt.step_and_zero_grad();
    } else {
      opt.step();
      opt.zero_grad();
    }
  });
}

/// FLOPs of common shapes (multiply-adds count 2).
constexpr double matmul_flops(double m, double n, double k) { return 2 * m * n * k; }
constexpr double conv2d_flops(double batch, double cin, double cout, double ho, double wo, double kh, double kw) {
  return 2 * batch * cout * ho * wo * cin * kh * kw;
}

}  // namespace loom::bench

/// Replaces the global allocation functions so that loom::bench counts heap allocations (operator new
/// and, with glibc, malloc) while a benchmark loop runs. Expand once, at namespace scope, in one
/// translation unit of the benchmark program.
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
#define LOOM_BENCH_COUNT_MALLOC_                                            \
  extern "C" void* __libc_malloc(std::size_t);                               \
  extern "C" void* malloc(std::size_t n) {                                   \
    if (::loom::bench::counting().load(std::memory_order_relaxed)) ++::loom::bench::allocations(); \
    return __libc_malloc(n);                                                 \
  }
#else
#define LOOM_BENCH_COUNT_MALLOC_
#endif
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
#define LOOM_BENCH_COUNT_NEW_  // operator new calls malloc, which counts
#else
#define LOOM_BENCH_COUNT_NEW_ \
  if (::loom::bench::counting().load(std::memory_order_relaxed)) ++::loom::bench::allocations();
#endif
#define LOOM_BENCH_COUNT_ALLOCATIONS                                                        \
  void* operator new(std::size_t n) {                                                       \
    LOOM_BENCH_COUNT_NEW_                                                                   \
    if (void* p = std::malloc(n ? n : 1)) return p;                                         \
    throw std::bad_alloc();                                                                 \
  }                                                                                         \
  void* operator new(std::size_t n, std::align_val_t a) {                                   \
    if (::loom::bench::counting().load(std::memory_order_relaxed)) ++::loom::bench::allocations(); \
    const std::size_t al = static_cast<std::size_t>(a);                                     \
    if (void* p = std::aligned_alloc(al, (n + al - 1) / al * al)) return p;                 \
    throw std::bad_alloc();                                                                 \
  }                                                                                         \
  void operator delete(void* p) noexcept { std::free(p); }                                  \
  void operator delete(void* p, std::size_t) noexcept { std::free(p); }                     \
  void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }                \
  void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }   \
  LOOM_BENCH_COUNT_MALLOC_

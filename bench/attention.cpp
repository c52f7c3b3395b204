// Fused (FlashAttention-style) attention against the unfused composition (matmul, masked softmax,
// matmul per head, concatenated), forward and forward + backward, causal, B = 1, D = 64, 4 heads.
//   build/bench/bench_attention --benchmark_format=json
#include <benchmark/benchmark.h>
#include <loom/loom.hpp>

using namespace loom;

namespace {
constexpr std::size_t D = 64, Heads = 4, Dh = D / Heads;

template <std::size_t... H, class Q, class K, class V, class M>
auto unfused(std::index_sequence<H...>, const Q& q, const K& k, const V& v, const M& mask) {
  const float scale = 1.0f / std::sqrt(float(Dh));
  return concat<2>(matmul(softmax<-1>(matmul(narrow<2, H * Dh, Dh>(q), transpose(narrow<2, H * Dh, Dh>(k))) * scale + mask),
                          narrow<2, H * Dh, Dh>(v))...);
}

struct Data {
  Param<float, Shape<1, 2048, D>> q, k, v;  // the largest T; smaller runs read a prefix
  explicit Data() {
    Generator g(1);
    q.value().assign(normal<float, Shape<1, 2048, D>>(g, 0, 1));
    k.value().assign(normal<float, Shape<1, 2048, D>>(g, 0, 1));
    v.value().assign(normal<float, Shape<1, 2048, D>>(g, 0, 1));
  }
};
Data& data() {
  static Data d;
  return d;
}

template <bool Fused, bool Backward>
void run(benchmark::State& state) {
  const auto T = static_cast<std::size_t>(state.range(0));
  auto& d = data();
  auto q = slice<1>(d.q, 0, std::ptrdiff_t(T)), k = slice<1>(d.k, 0, std::ptrdiff_t(T)), v = slice<1>(d.v, 0, std::ptrdiff_t(T));
  auto go = [&](auto&& program) {
    program.forward();
    if constexpr (Backward) program.backward();
    for (auto _ : state) {
      program.forward();
      if constexpr (Backward) program.backward();
      benchmark::ClobberMemory();
    }
  };
  if constexpr (Fused) {
    go(compile(sum(attention<Heads, true>(q, k, v))));
  } else {
    Tensor<float, Shape<dyn, dyn>> m({T, T});
    for (std::size_t i = 0; i < T; ++i)
      for (std::size_t j = 0; j < T; ++j) m(i, j) = j > i ? -1e30f : 0.0f;
    go(compile(sum(unfused(std::make_index_sequence<Heads>{}, q, k, v, Constant<float, Shape<dyn, dyn>>(m)))));
  }
  // causal: about half of the 4 T^2 D multiply-adds of QK^T and PV (x 2.5 more with the backward)
  const double flops = 2.0 * 2.0 * double(T) * double(T) * double(D) / 2 * (Backward ? 3.5 : 1.0);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * double(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
}
}  // namespace

BENCHMARK(run<true, false>)->Name("BM_attention_fwd_fused")->RangeMultiplier(2)->Range(128, 2048)->Unit(benchmark::kMillisecond);
BENCHMARK(run<false, false>)->Name("BM_attention_fwd_unfused")->RangeMultiplier(2)->Range(128, 2048)->Unit(benchmark::kMillisecond);
BENCHMARK(run<true, true>)->Name("BM_attention_bwd_fused")->RangeMultiplier(2)->Range(128, 2048)->Unit(benchmark::kMillisecond);
BENCHMARK(run<false, true>)->Name("BM_attention_bwd_unfused")->RangeMultiplier(2)->Range(128, 2048)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();

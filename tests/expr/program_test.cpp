// The compiled program: fusion, evaluation of shared values once, no conflation of distinct leaves,
// planned memory (zero steady-state allocations), re-planning, run-time shape errors, self-description.
#include <doctest/doctest.h>
#include <loom/loom.hpp>

#include "../support/gradcheck.hpp"
#include "../support/threads.hpp"

#include <atomic>
#include <cstdlib>
#include <new>
#include <vector>

// The counting operator new below allocates with malloc and its operator delete frees: GCC's
// -Wmismatched-new-delete cannot see that the pair is replaced together.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<std::size_t> g_allocations{0};
}  // namespace

// Counting global allocator: counts only while g_counting is set.
void* operator new(std::size_t n) {
  if (g_counting) ++g_allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, std::align_val_t a) {
  if (g_counting) ++g_allocations;
  const std::size_t al = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(al, (n + al - 1) / al * al)) return p;
  throw std::bad_alloc();
}
// Eigen and others call malloc directly: count those too (glibc; not under ASan, which owns malloc).
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
extern "C" void* __libc_malloc(std::size_t);
extern "C" void* malloc(std::size_t n) {
  if (g_counting) ++g_allocations;
  return __libc_malloc(n);
}
#endif
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

using namespace loom;

namespace {
/// A kernel op that copies its input and counts how often it runs.
struct Counted {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = true;
  static constexpr std::string_view name = "counted";
  static inline int runs = 0;
  template <class S>
  using shape = S;
  template <std::size_t R>
  Dims<R> dims(const Dims<R>& d) const { return d; }
  template <class T, std::size_t R>
  void forward(const detail::View<T, R>& out, const detail::View<T, R>& in) const {
    ++runs;
    backend::cpu::strided_apply<backend::cpu::Mode::assign>(out, in);
  }
  template <class T, std::size_t R>
  void backward(const detail::View<T, R>& g, const detail::View<T, R>&,
                const std::pair<detail::View<T, R>, detail::View<T, R>>& in) const {
    if (in.second.data) backend::cpu::strided_apply<backend::cpu::Mode::add>(in.second, g);
  }
};
template <Expression X>
auto counted(const X& x) { return make_node(Counted{}, x); }

template <class S>
Param<float, S> rand_param(std::uint64_t seed) {
  Generator g(seed);
  return Param<float, S>(uniform<float, S>(g, -1, 1));
}
/// A run-time-shaped operand with a gradient (value and gradient bound to a Variable; grad() reads it).
struct Var1 {
  Tensor<float, Shape<dyn>> value, g;
  Variable<float, Shape<dyn>> v;
  const Tensor<float, Shape<dyn>>& grad() const { return g; }
};
}  // namespace

TEST_CASE("program: an elementwise chain and its backward run as one loop each") {
  auto a = rand_param<Shape<1000>>(1), b = rand_param<Shape<1000>>(2), c = rand_param<Shape<1000>>(3);
  auto step = compile(tanh(a * b + c) * 0.5f + a);
  CHECK(step.stats().fused_nodes == 4);  // mul, add, tanh, mul fused into the root's loop
#if defined(LOOM_CPU_RUNS_DEVICE_KERNELS)
  auto& loops = backend::device::kernel_stats().kernels;  // (one kernel each on the device path)
#else
  auto& loops = backend::cpu::fused_stats().loops;
#endif
  step.forward();
  CHECK(step.stats().buffers == 2);       // the result, and tanh's value kept for the backward
  CHECK(step.stats().kept == 1);          // (stored by the same loop that computes it)
  CHECK(step.stats().grad_buffers == 0);  // the root's incoming gradient is the constant seed 1
  std::size_t before = loops;
  step.forward();
  CHECK(loops - before == 1);
  before = loops;
  step.backward();
  CHECK(loops - before == 1);  // da, db, dc written by one loop
  const float x = a.value()(7), y = b.value()(7), z = c.value()(7), t = std::tanh(x * y + z);
  CHECK(step.value()(7) == doctest::Approx(t * 0.5f + x));
  CHECK(a.grad()(7) == doctest::Approx(0.5f * (1 - t * t) * y + 1));
  CHECK(b.grad()(7) == doctest::Approx(0.5f * (1 - t * t) * x));
  CHECK(c.grad()(7) == doctest::Approx(0.5f * (1 - t * t)));
}

TEST_CASE("program: forward_backward() runs a one-group program's forward and backward as one loop") {
  // Against forward() then backward() on equal operands: the root's value and every gradient (they
  // accumulate: two steps give twice one step's gradient). Long rows (several chunks), 2-D rows on
  // several threads, a kept node broadcast at run time, a gradient summed over a broadcast axis (its
  // own loop), and a program that is not one group (a reduction at the root).
  using loom::testing::values;
  auto same = [](auto make_a, auto make_b, auto make_c, auto f, std::size_t want_loops) {
    auto a1 = make_a(), b1 = make_b(), c1 = make_c();
    auto a2 = make_a(), b2 = make_b(), c2 = make_c();
    auto one = compile(f(a1, b1, c1));
    auto two = compile(f(a2, b2, c2));
    one.forward_backward();  // (plans the buffers)
#if defined(LOOM_CPU_RUNS_DEVICE_KERNELS)
    (void)want_loops;  // (the device path's loop count is its own: a kernel per output where they reduce)
    one.forward_backward();
#else
    const std::size_t before = backend::cpu::fused_stats().loops;
    one.forward_backward();
    CHECK(backend::cpu::fused_stats().loops - before == want_loops);
#endif
    for (int k = 0; k < 2; ++k) {
      two.forward();
      two.backward();
    }
    CHECK(values(one.value()) == values(two.value()));
    const auto ga1 = values(a1.grad()), gb1 = values(b1.grad()), gc1 = values(c1.grad());
    const auto ga2 = values(a2.grad()), gb2 = values(b2.grad()), gc2 = values(c2.grad());
    REQUIRE(ga1.size() == ga2.size());
    double err = 0;  // (sums over broadcast axes may be added in another order)
    auto track = [&](const auto& x, const auto& y) {
      for (std::size_t i = 0; i < x.size(); ++i) err = std::max(err, std::abs(x[i] - y[i]) / (1 + std::abs(y[i])));
    };
    track(ga1, ga2), track(gb1, gb2), track(gc1, gc2);
    CHECK(err < 1e-6);
    CHECK(std::abs(gb1[0]) > 0);  // (gradients were written)
  };
  auto chain = [](const auto& a, const auto& b, const auto& c) { return tanh(a * b + c) * 0.5f + a; };
  using Chain = decltype(compile(chain(rand_param<Shape<4>>(1), rand_param<Shape<4>>(2), rand_param<Shape<4>>(3))));
  static_assert(Chain::fuses_forward_backward());
  SUBCASE("a 1-D chain longer than a chunk") {
    same([] { return rand_param<Shape<20011>>(1); }, [] { return rand_param<Shape<20011>>(2); },
         [] { return rand_param<Shape<20011>>(3); }, chain, 1);
  }
  SUBCASE("2-D, rows over threads") {
    auto run = [&] {
      same([] { return rand_param<Shape<40, 1000>>(4); }, [] { return rand_param<Shape<40, 1000>>(5); },
           [] { return rand_param<Shape<40, 1000>>(6); }, chain, 1);
      return 0;
    };
#ifdef _OPENMP
    loom::testing::same_on_threads(run, [](int, int) {});  // (the checks are same()'s, on each thread count)
#else
    run();
#endif
  }
  SUBCASE("a gradient summed over a broadcast axis keeps the backward's own loop") {
    same([] { return rand_param<Shape<3, 9000>>(7); }, [] { return rand_param<Shape<3, 9000>>(8); },
         [] { return rand_param<Shape<9000>>(9); }, chain, 2);
  }
  SUBCASE("a kept node broadcast at run time is stored by a loop of its own first") {
    auto var = [](std::size_t n, std::uint64_t seed) {
      return [=] {
        Generator g(seed);
        Var1 v;
        v.value = uniform<float, Shape<dyn>>(g, -1, 1, {n});
        v.g = Tensor<float, Shape<dyn>>({n});
        v.v.bind(v.value, v.g);
        return v;
      };
    };
    auto f = [](const Var1& a, const Var1& b, const Var1& c) { return tanh(a.v) * b.v + exp(c.v); };
    same(var(1, 11), var(6, 12), var(6, 13), f, 4);  // the kept nodes' loops, the group's, the gradients'
  }
  SUBCASE("a reduction at the root: forward() then backward()") {
    auto f = [](const auto& a, const auto& b, const auto& c) { return sum(tanh(a * b + c)); };
    using P = decltype(compile(f(rand_param<Shape<4>>(1), rand_param<Shape<4>>(2), rand_param<Shape<4>>(3))));
    static_assert(!P::fuses_forward_backward());
    same([] { return rand_param<Shape<300>>(1); }, [] { return rand_param<Shape<300>>(2); },
         [] { return rand_param<Shape<300>>(3); }, f, 3);  // (the reduction, the seed, its backward)
  }
}

TEST_CASE("program: a fused tanh, sigmoid or exp keeps its value for the backward") {
  using loom::testing::gradcheck;
  using loom::testing::param;
  SUBCASE("nested kept nodes, in an elementwise group and in a reduction's") {
    auto a = param<Shape<3, 5>>(11), b = param<Shape<3, 5>>(12);
    auto c = param<Shape<5>>(13);
    auto f = [&] { return tanh(sigmoid(a) * b) + exp(a * c); };
    auto p = compile(f());
    p.forward();
    CHECK(p.stats().kept == 3);  // tanh, sigmoid and exp: each fused, each stored once
    CHECK(p.describe().find("value kept for the backward") != std::string::npos);
    gradcheck(f, a, b, c);  // (inside sum(f * weights): the kept nodes fuse into the reduction's loop)
    auto q = compile(sum(exp(a * 0.5) * b));
    q.forward();
    CHECK(q.stats().kept == 1);
    double want = 0;
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t j = 0; j < 5; ++j) want += std::exp(a.value()(i, j) * 0.5) * b.value()(i, j);
    CHECK(q.value().item() == doctest::Approx(want));
  }
  SUBCASE("a kept node broadcast at run time is stored by a loop over its own extents") {
    Generator g(21);
    Tensor<double, Shape<dyn>> av = uniform<double, Shape<dyn>>(g, -1, 1, {1}), ag({1});
    Tensor<double, Shape<dyn>> bv = uniform<double, Shape<dyn>>(g, -1, 1, {6}), bg({6});
    Variable<double, Shape<dyn>> a, b;
    a.bind(av, ag);
    b.bind(bv, bg);
    auto p = compile(sum(tanh(a) * b + exp(b)));  // tanh(a) is [1] in a loop over [6]
    const double loss = p.forward().item();
    CHECK(p.stats().kept == 2);
    p.backward();
    const double t = std::tanh(av(0));
    double want = 0, want_da = 0;
    for (std::size_t i = 0; i < 6; ++i) {
      want += t * bv(i) + std::exp(bv(i));
      want_da += (1 - t * t) * bv(i);
      CHECK(bg(i) == doctest::Approx(t + std::exp(bv(i))).epsilon(1e-12));
    }
    CHECK(loss == doctest::Approx(want).epsilon(1e-12));
    CHECK(ag(0) == doctest::Approx(want_da).epsilon(1e-12));
  }
  SUBCASE("nothing is kept where no gradient flows") {
    Generator g(22);
    Input<float, Shape<4>> x;
    auto p = compile(tanh(x) * 2.0f + 1.0f);
    p.forward(uniform<float, Shape<4>>(g, -1, 1));
    CHECK(p.stats().kept == 0);
    CHECK(p.stats().buffers == 1);
  }
}

TEST_CASE("program: a gradient several outputs of the backward loop need is computed once per chunk") {
  // d/d(a*b+c) = 0.5 (1 - tanh^2) reaches a, b and c: the host loop stages it (one tanh per element, not
  // three); the device path (a thread per element) recomputes it. Rows longer than a chunk, rows
  // shorter than one, a broadcast operand (its gradient summed over rows) and both thread counts.
  auto check = [](auto a, auto b, auto c) {
    auto step = compile(tanh(a * b + c) * 0.5f + a);
    step.forward();
#if defined(LOOM_CPU_RUNS_DEVICE_KERNELS)
    step.backward();  // the device loops recompute the shared gradient: only the values below are checked
#else
    const std::size_t before = backend::cpu::fused_stats().staged;
    step.backward();
    CHECK(backend::cpu::fused_stats().staged - before == 1);
#endif
    auto vec = [](const auto& t) { return std::vector<float>(t.data(), t.data() + t.size()); };  // contiguous
    const auto av = vec(a.value()), bv = vec(b.value()), cv = vec(c.value());
    const auto ga = vec(a.grad()), gb = vec(b.grad()), gc = vec(c.grad());
    std::vector<double> want_c(cv.size(), 0.0);
    double err = 0;  // the largest error relative to 1 + |expected|
    auto track = [&](double got, double want) { err = std::max(err, std::abs(got - want) / (1 + std::abs(want))); };
    for (std::size_t i = 0; i < av.size(); ++i) {
      const std::size_t k = i % cv.size();  // c broadcast over rows when smaller
      const double t = std::tanh(double(av[i]) * bv[i] + cv[k]), dt = 0.5 * (1 - t * t);
      track(ga[i], dt * bv[i] + 1);
      track(gb[i], dt * av[i]);
      want_c[k] += dt;
    }
    for (std::size_t k = 0; k < cv.size(); ++k) track(gc[k], want_c[k]);
    CHECK(err < 1e-5);
  };
  check(rand_param<Shape<20011>>(1), rand_param<Shape<20011>>(2), rand_param<Shape<20011>>(3));
  check(rand_param<Shape<40, 1000>>(4), rand_param<Shape<40, 1000>>(5), rand_param<Shape<40, 1000>>(6));
  check(rand_param<Shape<3, 9000>>(7), rand_param<Shape<3, 9000>>(8), rand_param<Shape<9000>>(9));
}

TEST_CASE("program: a value used several times is computed once per step") {
  auto w = rand_param<Shape<4, 4>>(4);
  auto x = input<float, Shape<dyn, 4>>();
  auto h = counted(matmul(x, w));
  auto step = compile(sum(h + h * h + relu(h)));
  Generator g(5);
  auto xt = uniform<float, Shape<dyn, 4>>(g, -1, 1, {3, 4});
  Counted::runs = 0;
  step.forward(xt);
  CHECK(Counted::runs == 1);
  step.forward(xt);
  CHECK(Counted::runs == 2);
  CHECK(step.stats().deduplicated >= 2);
  step.backward();
  // d/dh = 1 + 2h + (h > 0); check one weight gradient against the formula.
  auto hv = xt.matrix() * w.value().matrix();
  Eigen::MatrixXf dh = (1 + 2 * hv.array() + (hv.array() > 0).cast<float>()).matrix();
  Eigen::MatrixXf dw = xt.matrix().transpose() * dh;
  CHECK(w.grad()(2, 3) == doctest::Approx(dw(2, 3)));
}

TEST_CASE("program: distinct parameters of one type are never conflated") {
  auto w1 = rand_param<Shape<3, 3>>(6), w2 = rand_param<Shape<3, 3>>(7);
  auto x = input<float, Shape<2, 3>>();
  auto xt = ones<float, Shape<2, 3>>();
  auto step = compile(sum(matmul(x, w1) + matmul(x, w2)));
  step.forward(xt);
  CHECK(step.stats().deduplicated == 1);  // only x, used twice, is found equal
  const float expect = 2 * (w1.value().array().sum() + w2.value().array().sum());
  CHECK(step.value().item() == doctest::Approx(expect));
  step.backward();
  CHECK(w1.grad()(0, 0) == doctest::Approx(2.0f));
  CHECK(w2.grad()(0, 0) == doctest::Approx(2.0f));
}

TEST_CASE("program: steady-state steps allocate nothing; a larger batch re-plans") {
  // 784-256-10 at batch 64: large enough that Eigen's own operator* would malloc its GEMM blocks.
  auto w1 = rand_param<Shape<784, 256>>(8);
  auto w2 = rand_param<Shape<256, 10>>(9);
  auto b1 = rand_param<Shape<256>>(10);
  auto x = input<float, Shape<dyn, 784>>();
  auto y = input<float, Shape<dyn, 10>>();
  auto logits = matmul(relu(matmul(x, w1) + b1), w2);
  auto step = compile(mean(sum<-1>(-y * log_softmax(logits))));
  Generator g(11);
  auto xt = uniform<float, Shape<dyn, 784>>(g, -1, 1, {64, 784});
  auto yt = full<float, Shape<dyn, 10>>(0.1f, {64, 10});
  step.forward(xt, yt);
  step.backward();
  CHECK(step.stats().plans == 1);
  g_allocations = 0;
  g_counting = true;
  for (int i = 0; i < 3; ++i) {
    step.forward(xt, yt);
    step.backward();
  }
  g_counting = false;
  CHECK(g_allocations == 0);
  CHECK(step.stats().plans == 1);
  auto xl = uniform<float, Shape<dyn, 784>>(g, -1, 1, {100, 784});
  auto yl = full<float, Shape<dyn, 10>>(0.1f, {100, 10});
  step.forward(xl, yl);
  CHECK(step.stats().plans == 2);
  CHECK(std::isfinite(step.value().item()));
}

TEST_CASE("program: run-time shape errors name both shapes") {
  auto x = input<float, Shape<dyn, 4>>();
  auto y = input<float, Shape<dyn, 4>>();
  auto step = compile(sum(x * y));
  auto a = ones<float, Shape<dyn, 4>>({3, 4});
  auto b = ones<float, Shape<dyn, 4>>({5, 4});
  try {
    step.forward(a, b);
    FAIL("expected shape_error");
  } catch (const shape_error& e) {
    CHECK(std::string(e.what()).find("[3, 4]") != std::string::npos);
    CHECK(std::string(e.what()).find("[5, 4]") != std::string::npos);
  }
  auto w = input<float, Shape<dyn, dyn>>();
  auto mm = compile(sum(matmul(x, transpose(w))));
  auto c = ones<float, Shape<dyn, dyn>>({5, 5});
  CHECK_THROWS_WITH_AS(mm.forward(a, c), doctest::Contains("inner dimensions differ"), shape_error);
  CHECK_THROWS_AS(step.forward(a), shape_error);  // wrong number of inputs
}

TEST_CASE("program: NaN detection and self-description") {
  auto p = rand_param<Shape<3>>(12);
  auto step = compile(sum(log(p)));
  step.forward();
  if (p.value()(0) < 0 || p.value()(1) < 0 || p.value()(2) < 0) CHECK_THROWS_AS(step.check_finite(), numeric_error);
  p.value().fill(-1.0f);
  step.forward();
  CHECK_THROWS_AS(step.check_finite(), numeric_error);
  const auto text = step.describe();
  CHECK(text.find("log") != std::string::npos);
  CHECK(text.find("fused into the loop of %2") != std::string::npos);
  const auto dot = step.to_dot();
  CHECK(dot.find("digraph loom") != std::string::npos);
  CHECK(dot.find("cluster_2") != std::string::npos);
}

TEST_CASE("program: large fused loops (packets, OpenMP rows, broadcast reductions) agree with plain loops") {
  Generator g(13);
  Param<float, Shape<300, 200>> a(uniform<float, Shape<300, 200>>(g, -1, 1));
  Param<float, Shape<200>> b(uniform<float, Shape<200>>(g, -1, 1));
  Param<float, Shape<300, 1>> c(uniform<float, Shape<300, 1>>(g, -1, 1));
  auto step = compile(sum(tanh(a * b + c) * 0.5f + exp(a * 0.1f)));
  step.forward();
  step.backward();
  double value = 0;
  std::vector<double> db(200, 0.0), dc(300, 0.0);
  double max_err_a = 0;
  for (std::size_t i = 0; i < 300; ++i)
    for (std::size_t j = 0; j < 200; ++j) {
      const double x = a.value()(i, j), y = b.value()(j), z = c.value()(i, 0), t = std::tanh(x * y + z);
      value += t * 0.5 + std::exp(x * 0.1);
      const double dt = 0.5 * (1 - t * t);
      db[j] += dt * x;
      dc[i] += dt;
      max_err_a = std::max(max_err_a, std::abs(a.grad()(i, j) - (dt * y + 0.1 * std::exp(x * 0.1))));
    }
  CHECK(step.value().item() == doctest::Approx(value).epsilon(1e-4));
  CHECK(max_err_a < 1e-5);
  for (std::size_t j = 0; j < 200; j += 37) CHECK(b.grad()(j) == doctest::Approx(db[j]).epsilon(1e-4));
  for (std::size_t i = 0; i < 300; i += 41) CHECK(c.grad()(i, 0) == doctest::Approx(dc[i]).epsilon(1e-4));
}

TEST_CASE("program: reshaping an input bound to a strided view copies it in row-major order") {
  auto x = input<float, Shape<dyn, dyn>>();
  auto p = compile(reshape<Shape<dyn>>(x) * 1.0f);
  Tensor<float, Shape<dyn, dyn>> t({2, 3});
  for (std::size_t i = 0; i < 6; ++i) t.data()[i] = float(i);
  const auto plain = p.forward(t).clone();
  CHECK(plain(1) == 1.0f);
  const auto tr = p.forward(t.transpose()).clone();  // [3, 2]: rows (0 3) (1 4) (2 5)
  REQUIRE(tr.size() == 6);
  const float want[] = {0, 3, 1, 4, 2, 5};
  for (std::size_t i = 0; i < 6; ++i) CHECK(tr(i) == want[i]);
}

#if defined(LOOM_CPU_RUNS_DEVICE_KERNELS)
// This file is also built into loom_suite_on_device, where every program runs the device code.
TEST_CASE("suite on device: programs over host tensors launch the device kernels") {
  using namespace loom;
  Param<float, Shape<3, 4>> a(full<float, Shape<3, 4>>(2.0f));
  auto p = compile(sum(tanh(a) * a));
  const std::size_t before = backend::device::kernel_stats().kernels;
  const float v = p.forward().item();
  p.backward();
  CHECK(backend::device::kernel_stats().kernels > before);
  CHECK(v == doctest::Approx(12 * 2 * std::tanh(2.0)));
  CHECK(a.grad()(1, 2) == doctest::Approx(std::tanh(2.0) + 2 * (1 - std::tanh(2.0) * std::tanh(2.0))));
}
#endif

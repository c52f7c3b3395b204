// The fused attention kernel against the unfused composition (matmul, masked softmax, matmul per head),
// finite-difference checks with causal and padding masks and with dropout.
#include <loom/loom.hpp>
#include <loom/ops/attention.hpp>

#include "../support/gradcheck.hpp"

using namespace loom;
using loom::testing::gradcheck;
using loom::testing::param;

namespace {
/// softmax(q_h k_h^T * scale + mask) v_h for every head, concatenated along the features.
template <std::size_t Heads, std::size_t Dh, class Q, class K, class V, class M>
auto unfused(const Q& q, const K& k, const V& v, const M& mask) {
  const double scale = 1 / std::sqrt(double(Dh));
  return [&]<std::size_t... H>(std::index_sequence<H...>) {
    return concat<2>(matmul(softmax<-1>(matmul(narrow<2, H * Dh, Dh>(q), transpose(narrow<2, H * Dh, Dh>(k))) * scale + mask),
                            narrow<2, H * Dh, Dh>(v))...);
  }(std::make_index_sequence<Heads>{});
}

/// -1e30 where key j is hidden from query i (causal, or past the key length of batch b), else 0.
template <std::size_t B, std::size_t Tq, std::size_t Tk>
Constant<double, Shape<B, Tq, Tk>> mask(bool causal, std::array<std::size_t, B> len, std::size_t q0 = 0) {
  Tensor<double, Shape<B, Tq, Tk>> m;
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t i = 0; i < Tq; ++i)
      for (std::size_t j = 0; j < Tk; ++j) m(b, i, j) = (j >= len[b] || (causal && j > q0 + i)) ? -1e30 : 0.0;
  return Constant<double, Shape<B, Tq, Tk>>(m);
}

template <class Fused, class Ref, class... P>
void same(Fused fused, Ref ref, const P&... params) {
  auto a = compile(sum(fused * fused));  // a loss with every output element weighted differently
  auto b = compile(sum(ref * ref));
  (params.zero_grad(), ...);
  const double fa = a.forward().item();
  a.backward();
  std::vector<std::vector<double>> ga;
  ((ga.emplace_back(params.grad().data(), params.grad().data() + params.grad().size())), ...);
  (params.zero_grad(), ...);
  CHECK(fa == doctest::Approx(b.forward().item()).epsilon(1e-10));
  b.backward();
  std::size_t n = 0;
  (
      [&](const auto& p) {
        const auto& want = ga[n++];
        for (std::size_t i = 0; i < want.size(); ++i) CHECK(p.grad().data()[i] == doctest::Approx(want[i]).epsilon(1e-9));
      }(params),
      ...);
}
}  // namespace

TEST_CASE("attention: the fused kernel equals the unfused composition (values and gradients)") {
  SUBCASE("bidirectional, Tq != Tk, two heads") {
    auto q = param<Shape<2, 5, 6>>(1);
    auto k = param<Shape<2, 9, 6>>(2), v = param<Shape<2, 9, 6>>(3);
    same(attention<2>(q, k, v), unfused<2, 3>(q, k, v, mask<2, 5, 9>(false, {9, 9})), q, k, v);
  }
  SUBCASE("causal over several tiles (T = 70 > 32-row and 64-column tiles)") {
    auto q = param<Shape<1, 70, 4>>(4), k = param<Shape<1, 70, 4>>(5), v = param<Shape<1, 70, 4>>(6);
    same(attention<2, true>(q, k, v), unfused<2, 2>(q, k, v, mask<1, 70, 70>(true, {70})), q, k, v);
  }
  SUBCASE("key lengths (padding) with a causal mask") {
    auto q = param<Shape<2, 6, 4>>(7), k = param<Shape<2, 6, 4>>(8), v = param<Shape<2, 6, 4>>(9);
    Tensor<std::int64_t, Shape<2>> len;
    len(0) = 6, len(1) = 4;
    Constant<std::int64_t, Shape<2>> lengths(len);
    // queries past a sequence's length still see its valid keys (they are ignored by the loss in practice)
    same(attention<1, true>(q, k, v, lengths), unfused<1, 4>(q, k, v, mask<2, 6, 6>(true, {6, 4})), q, k, v);
  }
}

TEST_CASE("attention: finite-difference checks (causal, padded, dropout with a pinned mask)") {
  auto q = param<Shape<2, 4, 4>>(11);
  auto k = param<Shape<2, 5, 4>>(12), v = param<Shape<2, 5, 4>>(13);
  SUBCASE("plain") { gradcheck([&] { return attention<2>(q, k, v); }, q, k, v); }
  SUBCASE("causal") { gradcheck([&] { return attention<2, true>(q, k * 1.0, v); }, q, k, v); }
  SUBCASE("padded") {
    Tensor<std::int64_t, Shape<2>> len;
    len(0) = 3, len(1) = 5;
    Constant<std::int64_t, Shape<2>> lengths(len);
    gradcheck([&] { return attention<1>(q, k, v, lengths); }, q, k, v);
  }
  SUBCASE("dropout on the probabilities") {
    auto st = std::make_shared<ops::AttentionState>();
    st->dropout = 0.3;
    st->seed = 7;
    st->fixed_salt = true;
    gradcheck([&] { return attention<2>(q, k, v, st); }, q, k, v);
    // the mask changes from one forward to the next unless pinned; eval mode turns it off
    st->fixed_salt = false;
    auto p = compile(attention<2>(q, k, v, st));
    const auto a = p.forward().clone(), b = p.forward().clone();
    CHECK(!allclose(a, b, 1e-12, 1e-12));
    st->mode.training = false;
    auto plain = compile(attention<2>(q, k, v));
    CHECK(allclose(p.forward().clone(), plain.forward().clone(), 1e-12, 1e-12));
  }
}

TEST_CASE("attention: bad shapes and lengths are clear errors") {
  auto q = input<float, Shape<dyn, dyn, 8>>();
  auto k = input<float, Shape<dyn, dyn, 8>>();
  auto p = compile(attention<2>(q, k, k));
  Tensor<float, Shape<dyn, dyn, 8>> a({2, 3, 8}), b({3, 3, 8});
  a.fill(0.f), b.fill(0.f);
  CHECK_THROWS_WITH_AS(p.forward(a, b), doctest::Contains("do not fit (2 heads)"), shape_error);
  auto len = input<std::int64_t, Shape<dyn>>();
  auto pl = compile(attention<2>(q, k, k, len));
  Tensor<std::int64_t, Shape<dyn>> l({2});
  l(0) = 3, l(1) = 4;
  CHECK_THROWS_WITH_AS(pl.forward(a, a, l), doctest::Contains("key length 4 outside [0, 3]"), std::out_of_range);
}

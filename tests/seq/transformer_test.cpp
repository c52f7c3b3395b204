// MultiheadAttention and the pre-norm TransformerLayer against torch.nn (tests/fixtures/gen_seq.py),
// the decoder-only TransformerLM's KV-cached decoding against full recomputation, and sampling.
#include <loom/loom.hpp>

#include "../support/fixtures.hpp"

using namespace loom;

namespace {
std::vector<float> get(const loom::testing::FixtureCase& c, const std::string& tag) {
  const auto v = loom::testing::tagged(c, tag);
  REQUIRE_MESSAGE(v.size() == 1, "fixture tag " << tag);
  return v[0];
}
/// Loads a module's parameters by their PyTorch names, runs make(x) and compares output and gradients.
template <class Module, class Make>
void check_against_torch(const std::string& name, const Module& m, Make make) {
  CAPTURE(name);
  const auto& c = loom::testing::fixtures("seq.txt").at(name);
  const auto params = nn::parameters(m);
  for (const auto& p : params) {
    const auto v = get(c, "param:" + p.name);
    REQUIRE_MESSAGE(v.size() == p.size, p.name);
    std::copy(v.begin(), v.end(), p.value);
  }
  auto x = loom::testing::load_param<Shape<2, 5, 8>>(get(c, "x"));
  auto y = make(x);
  loom::testing::compare(loom::testing::flat(compile(y * 1.0f).forward().clone()), get(c, "y"), "output");
  Tensor<float, Shape<2, 5, 8>> r;
  const auto rv = get(c, "r");
  std::copy(rv.begin(), rv.end(), r.data());
  auto step = compile(sum(y * Constant<float, Shape<2, 5, 8>>(r)));
  step.forward();
  step.backward();
  for (const auto& p : params)
    loom::testing::compare(std::vector<float>(p.grad, p.grad + p.size), get(c, "grad:" + p.name), p.name.c_str());
  loom::testing::compare(loom::testing::flat(x.grad()), get(c, "dx"), "dx");
}
}  // namespace

TEST_CASE("nn: MultiheadAttention and TransformerLayer match torch.nn") {
  Generator g(0);
  Tensor<std::int64_t, Shape<2>> len;
  len(0) = 5, len(1) = 4;  // as the key_padding_mask of the fixture
  Constant<std::int64_t, Shape<2>> lengths(len);
  nn::MultiheadAttention<8, 2, true> mha(g);
  check_against_torch("mha_causal_padded", mha, [&](const auto& x) { return mha(x, lengths); });
  nn::TransformerLayer<8, 2, 16, true> layer(g);
  check_against_torch("transformer_layer", layer, [&](const auto& x) { return layer(x); });
  static_assert(decltype(mha)::num_params == 4 * 8 * 8 + 4 * 8);
}

TEST_CASE("nn: KV-cached decoding gives the logits of full recomputation") {
  constexpr std::size_t V = 11, B = 2, T = 9;
  using LM = nn::TransformerLM<V, 8, 2, 2, 16>;  // two layers: the cache of each must line up
  Generator g(3);
  LM lm(g);
  Tensor<std::int64_t, Shape<dyn, dyn>> seq({B, T});
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t t = 0; t < T; ++t) seq(b, t) = std::int64_t((7 * b + 3 * t * t + 1) % V);
  auto tokens = input<std::int64_t, Shape<dyn, dyn>>();
  auto positions = input<std::int64_t, Shape<dyn>>();
  auto full = compile(lm(tokens, positions));
  const auto want = full.forward(seq, LM::positions(T)).clone();
  REQUIRE(want.dims() == Dims<3>{B, T, V});

  auto cache = lm.make_cache(B);
  auto lengths = input<std::int64_t, Shape<dyn>>();
  auto step = compile(lm.decode(tokens, positions, lengths, cache));
  Tensor<std::int64_t, Shape<dyn>> len({B});
  auto run = [&](std::size_t from, std::size_t n) {  // decode tokens [from, from + n)
    Tensor<std::int64_t, Shape<dyn, dyn>> x({B, n});
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t t = 0; t < n; ++t) x(b, t) = seq(b, from + t);
    len.fill(std::int64_t(from + n));
    const auto out = step.forward(x, LM::positions(n, from), len).clone();
    cache.pos += n;
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t t = 0; t < n; ++t)
        for (std::size_t v = 0; v < V; ++v)
          CHECK(out(b, t, v) == doctest::Approx(want(b, from + t, v)).epsilon(1e-4));
  };
  run(0, 3);  // prefill a 3-token prompt
  const float* kbuf = cache.k[0].data();
  run(3, 1);
  const auto plans = step.stats().plans, bytes = step.stats().bytes;
  for (std::size_t t = 4; t < T; ++t) run(t, 1);  // then one token at a time
  CHECK(step.stats().plans == plans);  // the decode program's buffers stay as they are ...
  CHECK(step.stats().bytes == bytes);
  CHECK(cache.k[0].data() == kbuf);  // ... and the cache never grows
  CHECK_THROWS_WITH_AS(LM::positions(17), doctest::Contains("longer than the positional table (16 positions)"), shape_error);
  cache.pos = 16;  // a full cache: appending one more token is an error naming the capacity
  Tensor<std::int64_t, Shape<dyn, dyn>> one({B, 1});
  one.fill(1);
  len.fill(17);
  CHECK_THROWS_WITH_AS(step.forward(one, LM::positions(1, 15), len), doctest::Contains("exceed the cache's 16"), shape_error);
}

TEST_CASE("nn: sampling is greedy at temperature 0, stays in the top k, and is seeded") {
  const float logits[] = {0.1f, 2.0f, -1.0f, 1.9f, 0.0f};
  std::vector<double> scratch;
  Generator g(1);
  CHECK(nn::sample(logits, 5, {.temperature = 0}, g, scratch) == 1);
  CHECK(nn::sample(logits, 5, {.temperature = 1, .top_k = 1}, g, scratch) == 1);
  std::vector<int> seen(5, 0);
  for (int i = 0; i < 400; ++i) ++seen[nn::sample(logits, 5, {.temperature = 1, .top_k = 2}, g, scratch)];
  CHECK(seen[0] + seen[2] + seen[4] == 0);
  CHECK(seen[1] > 100);
  CHECK(seen[3] > 100);
  Generator a(9), b(9);
  for (int i = 0; i < 20; ++i) CHECK(nn::sample(logits, 5, {}, a, scratch) == nn::sample(logits, 5, {}, b, scratch));
}

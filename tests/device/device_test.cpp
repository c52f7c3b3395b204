// The device backend (loom::gpu) against the host, op by op. Built twice: with g++ and Thrust's OMP device
// system (runs in CI), and with nvcc for CUDA (runs where a GPU is). Training runs: device_train_test.cpp.
#include "device_support.hpp"

TEST_CASE("device: the build runs the device system it was configured for") {
  // nvcc: CUDA; the host compiler with loom::device_host: Thrust's OMP system (CPP without OpenMP).
#if defined(__CUDACC__)
  const std::string expected = "cuda";
#elif defined(_OPENMP)
  const std::string expected = "omp";
#else
  const std::string expected = "cpp";
#endif
  MESSAGE("device system: " << std::string(device::system_name()));
  CHECK(std::string(device::system_name()) == expected);
}

TEST_CASE("device: tensors, transfers, views") {
  Generator g(1);
  const auto h = uniform<float, Shape<3, 4>>(g, -1, 1);
  const auto d = h.to<gpu>();
  static_assert(std::is_same_v<std::remove_cvref_t<decltype(d)>, Tensor<float, Shape<3, 4>, gpu>>);
  CHECK(allclose(d.to<cpu>(), h));
  CHECK(d.data() != h.data());
  SUBCASE("a transposed view comes back contiguous and transposed") {
    const auto t = d.transpose().to<cpu>();
    CHECK(t.is_contiguous());
    CHECK(allclose(t, h.transpose().clone()));
  }
  SUBCASE("fill, strided assign, item") {
    Tensor<float, Shape<4, 3>, gpu> e;
    e.assign(d.transpose());
    CHECK(allclose(e.to<cpu>(), h.transpose().clone()));
    e.slice<0>(1, 3).fill(7.f);
    const auto back = e.to<cpu>();
    CHECK(back(1, 2) == 7.f);
    CHECK(back(2, 0) == 7.f);
    CHECK(back(0, 0) == h(0, 0));
    CHECK(back(3, 1) == h(1, 3));
    CHECK(d.slice<0>(2, 3).slice<1>(1, 2).reshape<Shape<>>().item() == h(2, 1));
  }
  SUBCASE("factories") {
    CHECK(allclose(ones<float, Shape<5>, gpu>().to<cpu>(), ones<float, Shape<5>>()));
    CHECK(allclose(arange<float, Shape<2, 3>, gpu>(1, 2).to<cpu>(), arange<float, Shape<2, 3>>(1, 2)));
    Tensor<float, Shape<2>, gpu> v({2}, {3.f, 4.f});
    CHECK(v.to<cpu>()(1) == 4.f);
  }
}

TEST_CASE("device: the caching allocator reuses freed blocks") {
  const auto before = device::allocator_stats();
  { Tensor<float, Shape<1000>, gpu> a; }
  const auto mid = device::allocator_stats();
  { Tensor<float, Shape<1000>, gpu> b; }
  const auto after = device::allocator_stats();
  CHECK(mid.system_allocs <= before.system_allocs + 1);
  CHECK(after.system_allocs == mid.system_allocs);
  CHECK(after.reuses == mid.reuses + 1);
}

TEST_CASE("device: a fused elementwise chain is one kernel, forward and backward") {
  auto a = twin<Shape<64, 33>>(1);
  auto b = twin<Shape<64, 33>>(2);
  auto c = twin<Shape<33>>(3);
  auto f = [](const auto& x, const auto& y, const auto& z) { return tanh(x * y + z) * 0.5f + x; };
  same_on_both(f, 1e-5, a, b, c);
  auto p = compile(f(a.d, b.d, c.d));
  p.forward();
  auto k0 = backend::device::kernel_stats().kernels;
  p.forward();
  CHECK(backend::device::kernel_stats().kernels - k0 == 1);
  CHECK(p.stats().fused_nodes >= 4);
  // forward_backward(): the gradients join the forward's kernel where none is summed over a broadcast
  // axis (c2 has the full shape here); values and gradients as forward() then backward() on the host.
  auto a2 = twin<Shape<64, 33>>(4), b2 = twin<Shape<64, 33>>(5), c2 = twin<Shape<64, 33>>(6);
  auto ph = compile(f(a2.h, b2.h, c2.h));
  auto pd = compile(f(a2.d, b2.d, c2.d));
  static_assert(decltype(pd)::fuses_forward_backward());
  ph.forward();
  ph.backward();
  check_close(ph.value().clone(), pd.forward_backward(), 1e-5);
  check_close(a2.h.grad(), a2.d.grad(), 1e-5);
  check_close(b2.h.grad(), b2.d.grad(), 1e-5);
  check_close(c2.h.grad(), c2.d.grad(), 1e-5);
  k0 = backend::device::kernel_stats().kernels;
  pd.forward_backward();
  CHECK(backend::device::kernel_stats().kernels - k0 == 1);
}

TEST_CASE("device: elementwise ops match the host") {
  auto a = twin<Shape<5, 7>>(4);
  auto b = twin<Shape<7>>(5);
  auto pos = twin<Shape<5, 7>>(6, 0.2, 3.0);
  SUBCASE("arithmetic, broadcasting, scalars") {
    same_on_both([](const auto& x, const auto& y, const auto& p) { return (x - y) * y / p + 2.0f * x - 1.5f; }, 1e-5, a, b, pos);
  }
  SUBCASE("pow") { same_on_both([](const auto& p, const auto& y) { return pow(p, y + 2.0f) + pow(p, 3); }, 1e-4, pos, b); }
  SUBCASE("unary") {
    same_on_both([](const auto& x, const auto& p) {
      return exp(x) + log(p) + sqrt(p) + abs(x) + sigmoid(x * 3.0f) + relu(x) + gelu(x) + clamp(p, 0.7, 2.1) - x;
    }, 1e-5, a, pos);
  }
  SUBCASE("maximum, minimum, where, comparisons") {
    same_on_both([](const auto& x, const auto& y) {
      return maximum(x, y) + minimum(x, y) * 2.0f + where(greater(x, y), x, y * 3.0f);
    }, 1e-5, a, b);
  }
}

TEST_CASE("device: reductions match the host") {
  auto a = twin<Shape<6, 300>>(7);
  SUBCASE("sum, mean, max over axes") {
    same_on_both([](const auto& x) { return sum<1>(x) + mean<1>(x) * 2.0f + max<1>(x); }, 1e-4, a);
    same_on_both([](const auto& x) { return sum<0>(x) + max<0>(x); }, 1e-4, a);
    auto short_rows = twin<Shape<100, 40>>(10);  // CUDA: a block per row with fewer terms than threads
    same_on_both([](const auto& x) { return sum<1>(x) + max<1>(x * 2.0f); }, 1e-4, short_rows);
  }
  SUBCASE("softmax and logsumexp") {
    same_on_both([](const auto& x) { return softmax(x * 3.0f) + logsumexp<-1>(x, keepdims); }, 1e-5, a);
  }
  SUBCASE("a long full reduction (one parallel reduction)") {
    auto big = twin<Shape<200000>>(8);
    same_on_both([](const auto& x) { return sum(tanh(x)) * 1e-3f; }, 1e-4, big);
  }
  SUBCASE("the gradient of a broadcast operand sums over the batch") {
    auto bias = twin<Shape<300>>(9);
    same_on_both([](const auto& x, const auto& bb) { return relu(x + bb); }, 1e-5, a, bias);
  }
}

TEST_CASE("device: matmul (cuBLAS on CUDA) matches the host") {
  SUBCASE("2-D, and with a transposed operand") {
    auto x = twin<Shape<17, 40>>(10);
    auto w = twin<Shape<24, 40>>(11);
    same_on_both([](const auto& p, const auto& q) { return matmul(p, transpose(q)); }, 1e-4, x, w);
    auto v = twin<Shape<40, 24>>(12);
    same_on_both([](const auto& p, const auto& q) { return matmul(p, q); }, 1e-4, x, v);
  }
  SUBCASE("batched (one strided-batched call) and broadcast over the batch") {
    auto a = twin<Shape<3, 8, 5>>(13);
    auto b = twin<Shape<3, 5, 6>>(14);
    auto w = twin<Shape<5, 6>>(15);
    same_on_both([](const auto& p, const auto& q) { return matmul(p, q); }, 1e-4, a, b);
    same_on_both([](const auto& p, const auto& q) { return matmul(p, q); }, 1e-4, a, w);
  }
}

TEST_CASE("device: TF32 products (loom::device::tf32()) are opt-in, within TF32's rounding") {
  using S1 = Shape<256, 512>;
  using S2 = Shape<512, 256>;
  Generator g(16);
  const auto a = uniform<float, S1>(g, -1, 1);
  const auto b = uniform<float, S2>(g, -1, 1);
  auto p = compile(matmul(Constant<float, S1, gpu>(a.to<gpu>()), Constant<float, S2, gpu>(b.to<gpu>())));
  // the largest error against the product summed in double, relative to its largest magnitude
  auto error = [&] {
    const auto c = p.forward().to<cpu>();
    double err = 0, top = 0;
    for (std::size_t i = 0; i < 256; ++i)
      for (std::size_t j = 0; j < 256; ++j) {
        double ref = 0;
        for (std::size_t k = 0; k < 512; ++k) ref += double(a(i, k)) * double(b(k, j));
        err = std::max(err, std::abs(double(c(i, j)) - ref)), top = std::max(top, std::abs(ref));
      }
    return err / top;
  };
  REQUIRE_FALSE(device::tf32());
  const double full = error();
  device::tf32() = true;
  const double tf = error();
  device::tf32() = false;
  MESSAGE("float products: " << full << ", TF32 allowed: " << tf << " (largest error / largest magnitude)");
  CHECK(full < 5e-6);  // (~1e-6: sums of 512 float products)
  CHECK(tf < 4e-3);    // operands rounded to 10-bit mantissas (2^-11 relative), accumulated in float: ~5e-4
#if defined(__CUDACC__)
  CHECK_MESSAGE(tf > 2e-5, "TF32 allowed but the product is as exact as float's: cuBLAS did not take TF32");
#else
  CHECK(tf == full);  // the host device systems' kernel has no TF32
#endif
  CHECK(error() == full);  // and off again
}

TEST_CASE("device: concat, pad, dilate (one implementation for both devices) match the host") {
  auto a = twin<Shape<3, 4>>(30);
  auto b = twin<Shape<3, 2>>(31);
  same_on_both([](const auto& x, const auto& y) { return concat<1>(x, y * 2.0f, exp(x)); }, 1e-5, a, b);
  same_on_both([](const auto& x) { return pad<1, 2, 1>(x) * 2.0f + 1.0f; }, 1e-5, a);
  same_on_both([](const auto& x) { return dilate<0, 2>(x) * 3.0f; }, 1e-5, a);
}

TEST_CASE("device: conv2d (im2col + GEMM) and pooling match the host") {
  auto x = twin<Shape<2, 3, 9, 8>>(40);
  auto w = twin<Shape<4, 3, 3, 3>>(41);
  SUBCASE("conv2d: stride 1 padding 1; stride 2 padding 0 dilation 2") {
    same_on_both([](const auto& a, const auto& b) { return conv2d<1, 1>(a, b); }, 1e-4, x, w);
    same_on_both([](const auto& a, const auto& b) { return conv2d<2, 0, 2>(a, b); }, 1e-4, x, w);
  }
  SUBCASE("conv2d in chunks of samples (a workspace limit below the batch's column buffers)") {
    auto x3 = twin<Shape<3, 3, 9, 8>>(42);
    const std::size_t limit = loom::device::conv_workspace_limit();
    // per sample: im2col 27 x 72 = 1944 elements, the weight gradient's product 4 x 27 = 108
    for (const std::size_t chunk_limit : {std::size_t{1}, std::size_t{2 * (1944 + 108)}}) {
      loom::device::conv_workspace_limit() = chunk_limit;  // chunks of 1, then of 2 + 1 samples
      same_on_both([](const auto& a, const auto& b) { return conv2d<1, 1>(a, b); }, 1e-4, x3, w);
    }
    loom::device::conv_workspace_limit() = limit;
  }
  SUBCASE("max and average pooling, with overlapping windows") {
    same_on_both([](const auto& a) { return max_pool2d<2>(a) * 2.0f; }, 1e-5, x);
    same_on_both([](const auto& a) { return max_pool2d<3, 2>(a) + avg_pool2d<3, 2>(a); }, 1e-5, x);
    same_on_both([](const auto& a) { return avg_pool2d<3, 1>(a) * 3.0f; }, 1e-5, x);
  }
}

TEST_CASE("device: embedding (gather; scatter-add with atomics for repeated indices)") {
  auto table = twin<Shape<7, 5>>(50);
  Tensor<std::int64_t, Shape<3, 4>> ids({3, 4}, {0, 6, 2, 2, 5, 0, 0, 1, 3, 2, 6, 6});
  Constant<std::int64_t, Shape<3, 4>, cpu> ih(ids);
  Constant<std::int64_t, Shape<3, 4>, gpu> id(ids.to<gpu>());
  auto eh = embedding(table.h, ih);
  auto ed = embedding(table.d, id);
  Generator g(3);
  const auto w = uniform<float, Shape<3, 4, 5>>(g, -1, 1);
  auto ph = compile(sum(eh * Constant<float, Shape<3, 4, 5>, cpu>(w)));
  auto pd = compile(sum(ed * Constant<float, Shape<3, 4, 5>, gpu>(w.to<gpu>())));
  CHECK(pd.forward().item() == doctest::Approx(ph.forward().item()).epsilon(1e-5));
  ph.backward();
  pd.backward();
  check_close(table.h.grad(), table.d.grad(), 1e-5);
  check_close(compile(materialize(eh)).forward().clone(), compile(materialize(ed)).forward(), 0);
  SUBCASE("an index outside the table throws, as on the host") {
    auto bad = ids.clone();
    bad(1, 2) = 7;
    Constant<std::int64_t, Shape<3, 4>, gpu> b(bad.to<gpu>());
    auto p = compile(materialize(embedding(table.d, b)));
    CHECK_THROWS_AS(p.forward(), std::out_of_range);
  }
}

TEST_CASE("device: layer norm, batch norm and dropout match the host") {
  auto x = twin<Shape<4, 3, 5>>(60, -2, 3);
  auto gamma = twin<Shape<5>>(61, 0.5, 1.5);
  auto beta = twin<Shape<5>>(62);
  SUBCASE("layer norm over the last axis; of a strided (transposed) input") {
    const auto ln = [](const auto& a, const auto& g, const auto& b) { return make_node(nn::ops::LayerNorm{1e-5}, a, g, b); };
    same_on_both(ln, 1e-5, x, gamma, beta);
    auto g3 = twin<Shape<4>>(63, 0.5, 1.5);
    auto b3 = twin<Shape<4>>(64);
    same_on_both([&](const auto& a, const auto& g, const auto& b) { return ln(permute<2, 1, 0>(a), g, b); }, 1e-5, x, g3, b3);
  }
  SUBCASE("batch norm in training mode (batch statistics), gradients through them") {
    auto c = twin<Shape<3>>(65, 0.5, 1.5);
    auto cb = twin<Shape<3>>(66);
    same_on_both([](const auto& a, const auto& g, const auto& b) {
      nn::BatchNorm<3> bn;  // a fresh module per program: running statistics are checked below
      return make_node(nn::ops::BatchNorm{bn.mode, bn.running_mean, bn.running_var}, a, g, b);
    }, 1e-5, x, c, cb);
  }
  SUBCASE("batch norm modules: running statistics, then eval mode") {
    nn::BatchNorm<3> h;
    nn::BatchNorm<3, float, gpu> d;
    auto ph = compile(sum(h(x.h) * h(x.h)));
    auto pd = compile(sum(d(x.d) * d(x.d)));
    for (int s = 0; s < 3; ++s) CHECK(pd.forward().item() == doctest::Approx(ph.forward().item()).epsilon(1e-5));
    for (std::size_t k = 0; k < 3; ++k) {
      CHECK((*d.running_mean)[k] == doctest::Approx((*h.running_mean)[k]).epsilon(1e-6));
      CHECK((*d.running_var)[k] == doctest::Approx((*h.running_var)[k]).epsilon(1e-6));
      CHECK((*h.running_var)[k] != doctest::Approx(1.0));  // they moved
    }
    h.set_training(false);
    d.set_training(false);
    CHECK(pd.forward().item() == doctest::Approx(ph.forward().item()).epsilon(1e-5));
    x.h.zero_grad();
    x.d.zero_grad();
    ph.backward();
    pd.backward();
    check_close(x.h.grad(), x.d.grad(), 1e-5);
    check_close(h.weight.grad(), d.weight.grad(), 1e-4);
  }
  SUBCASE("dropout: the same counter-based mask on both devices; the identity in eval mode") {
    Generator g1(8), g2(8);
    nn::Dropout<300> dh(g1), dd(g2);
    const auto drop = [&](const auto& a) {
      if constexpr (std::is_same_v<device_t<std::remove_cvref_t<decltype(a)>>, gpu>) return dd(a) * 1.0f;
      else return dh(a) * 1.0f;
    };
    same_on_both(drop, 0, x);
    same_on_both([&](const auto& a) { return drop(permute<1, 0, 2>(a)); }, 0, x);
    auto pd = compile(sum(dd(x.d)));
    const auto zeros = [&] {
      const auto y = compile(materialize(dd(x.d))).forward().template to<cpu>();
      std::size_t n = 0;
      y.for_each([&](float v) { n += v == 0.0f; });
      return n;
    };
    CHECK(zeros() > 0);
    dd.set_training(false);
    CHECK(zeros() == 0);
    CHECK(pd.forward().item() == doctest::Approx(compile(sum(x.h)).forward().item()).epsilon(1e-5));
  }
}

TEST_CASE("device: attention (causal, padded, with dropout) matches the host, values and gradients") {
  auto q = twin<Shape<2, 5, 8>>(70);
  auto k = twin<Shape<2, 6, 8>>(71), v = twin<Shape<2, 6, 8>>(72);
  SUBCASE("plain and causal") {
    same_on_both([](const auto& a, const auto& b, const auto& c) { return attention<2>(a, b, c); }, 1e-5, q, k, v);
    same_on_both([](const auto& a, const auto& b, const auto& c) { return attention<4, true>(a, b, c); }, 1e-5, q, k, v);
  }
  SUBCASE("key lengths (one row fully visible, one padded) and a strided query") {
    Tensor<std::int64_t, Shape<2>> len({2}, {6, 3});
    Constant<std::int64_t, Shape<2>, cpu> lh(len);
    Constant<std::int64_t, Shape<2>, gpu> ld(len.to<gpu>());
    same_on_both([&](const auto& a, const auto& b, const auto& c) {
      if constexpr (std::is_same_v<device_t<std::remove_cvref_t<decltype(a)>>, gpu>) return attention<2, true>(a * 2.0f, b, c, ld);
      else return attention<2, true>(a * 2.0f, b, c, lh);
    }, 1e-5, q, k, v);
    Tensor<std::int64_t, Shape<2>> bad({2}, {6, 7});
    Constant<std::int64_t, Shape<2>, gpu> b(bad.to<gpu>());
    auto p = compile(materialize(attention<2>(q.d, k.d, v.d, b)));
    CHECK_THROWS_AS(p.forward(), std::out_of_range);
  }
  SUBCASE("dropout on the weights: the same pinned mask on both devices") {
    auto st = std::make_shared<ops::AttentionState>();
    st->dropout = 0.3, st->seed = 5, st->fixed_salt = true, st->calls = 1;
    same_on_both([&](const auto& a, const auto& b, const auto& c) { return attention<2>(a, b, c, st); }, 1e-5, q, k, v);
  }
}

TEST_CASE("device: attention with heads of 64, 32 and 16 features over several tiles matches the host") {
  // The widths and type (float) of CUDA's tiled kernels; 70 and 150 rows: more than one block of 64 rows
  // and tile of keys or queries, and neither a multiple of the tile sizes.
  auto q = twin<Shape<2, 70, 128>>(90);
  auto qc = twin<Shape<2, 150, 128>>(93);
  auto k = twin<Shape<2, 150, 128>>(91), v = twin<Shape<2, 150, 128>>(92);
  SUBCASE("plain, 2 heads of 64") {
    same_on_both([](const auto& a, const auto& b, const auto& c) { return attention<2>(a, b, c); }, 1e-5, q, k, v);
  }
  SUBCASE("causal, 4 heads of 32, from a strided (transposed) query") {
    same_on_both([](const auto& a, const auto& b, const auto& c) {
      return attention<4, true>(permute<1, 0, 2>(permute<1, 0, 2>(a) * 0.5f), b, c);
    }, 1e-5, qc, k, v);
  }
  SUBCASE("causal with key lengths (all 150; 37), 8 heads of 16") {
    Tensor<std::int64_t, Shape<2>> len({2}, {150, 37});
    Constant<std::int64_t, Shape<2>, cpu> lh(len);
    Constant<std::int64_t, Shape<2>, gpu> ld(len.to<gpu>());
    same_on_both([&](const auto& a, const auto& b, const auto& c) {
      if constexpr (std::is_same_v<device_t<std::remove_cvref_t<decltype(a)>>, gpu>) return attention<8, true>(a, b, c, ld);
      else return attention<8, true>(a, b, c, lh);
    }, 1e-5, qc, k, v);
  }
  SUBCASE("dropout on the weights, causal, 2 heads of 64") {
    auto st = std::make_shared<ops::AttentionState>();
    st->dropout = 0.2, st->seed = 7, st->fixed_salt = true, st->calls = 1;
    same_on_both([&](const auto& a, const auto& b, const auto& c) { return attention<2, true>(a, b, c, st); }, 1e-5, qc, k, v);
  }
  SUBCASE("causal from a query offset (KV-cached decoding), 2 heads of 64") {
    // 70 queries at absolute positions q_start + i over 150 keys: at 30 every row sees a different
    // prefix inside the keys; at 80 the last row sees all 150.
    auto st = std::make_shared<ops::AttentionState>();
    std::size_t pos = 0;
    st->q_start = &pos;
    for (std::size_t start : {std::size_t{30}, std::size_t{80}}) {
      CAPTURE(start);
      pos = start;
      same_on_both([&](const auto& a, const auto& b, const auto& c) { return attention<2, true>(a, b, c, st); }, 1e-5, q, k, v);
    }
  }
}

namespace {
/// scan<Cell> over the same x, h0 and weights on both devices (x also as a strided view).
template <class Cell>
void scan_both(const Twin<Shape<5, 2, 3>>& x, const Twin<Shape<2, 5, 3>>& xb) {
  constexpr std::size_t H = 4, G = Cell::gates, S = Cell::state * H;
  auto h0 = twin<Shape<2, S>>(81);
  auto wih = twin<Shape<G * H, 3>>(82);
  auto whh = twin<Shape<G * H, H>>(83);
  auto bih = twin<Shape<G * H>>(84), bhh = twin<Shape<G * H>>(85);
  same_on_both([](const auto& a, const auto& h, const auto& wi, const auto& wh, const auto& bi, const auto& bh) {
    return scan<Cell>(a, h, wi, wh, bi, bh);
  }, 1e-5, x, h0, wih, whh, bih, bhh);
  same_on_both([](const auto& a, const auto& h, const auto& wi, const auto& wh, const auto& bi, const auto& bh) {
    return scan<Cell>(permute<1, 0, 2>(a), h * 0.5f, wi, wh, bi, bh);
  }, 1e-5, xb, h0, wih, whh, bih, bhh);
}
}  // namespace

TEST_CASE("device: recurrent scans (RNN, LSTM, GRU kernels; a cell written as an expression) match the host") {
  auto x = twin<Shape<5, 2, 3>>(80);
  auto xb = twin<Shape<2, 5, 3>>(87);
  SUBCASE("rnn tanh") { scan_both<cells::RNN<false>>(x, xb); }
  SUBCASE("rnn relu") { scan_both<cells::RNN<true>>(x, xb); }
  SUBCASE("lstm") { scan_both<cells::LSTM>(x, xb); }
  SUBCASE("gru") { scan_both<cells::GRU>(x, xb); }
  SUBCASE("an expression cell (GRUCell::scan): sub-programs on the device") {
    Generator g1(5), g2(5);
    nn::GRUCell<3, 4> ch(g1);
    nn::GRUCell<3, 4>::on_device<gpu> cd(g2);
    auto h0 = twin<Shape<2, 4>>(86);
    same_on_both([&](const auto& a, const auto& h) {
      if constexpr (std::is_same_v<device_t<std::remove_cvref_t<decltype(a)>>, gpu>) return cd.scan(a, h);
      else return ch.scan(a, h);
    }, 1e-5, x, h0);
    check_close(ch.weight_hh.grad(), cd.weight_hh.grad(), 1e-5);
    check_close(ch.bias_ih.grad(), cd.bias_ih.grad(), 1e-5);
  }
  SUBCASE("a two-layer LSTM module: outputs, final states and weight gradients") {
    Generator g1(6), g2(6);
    nn::LSTM<3, 4, 2> mh(g1);
    nn::LSTM<3, 4, 2>::on_device<gpu> md(g2);
    auto h0 = twin<Shape<2, 2, 8>>(88);
    auto rh = mh(x.h, h0.h);
    auto rd = md(x.d, h0.d);
    auto ph = compile(sum(rh.out * rh.out) + sum(rh.state));
    auto pd = compile(sum(rd.out * rd.out) + sum(rd.state));
    CHECK(pd.forward().item() == doctest::Approx(ph.forward().item()).epsilon(1e-5));
    ph.backward(), pd.backward();
    check_close(mh.first.weight_ih.grad(), md.first.weight_ih.grad(), 1e-5);
    check_close(mh.rest[0].weight_hh.grad(), md.rest[0].weight_hh.grad(), 1e-5);
    check_close(h0.h.grad(), h0.d.grad(), 1e-5);
  }
}

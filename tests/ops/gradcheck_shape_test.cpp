// Finite-difference gradient checks (double) for reductions, matmul and shape ops.
#include "../support/gradcheck.hpp"

using namespace loom;
using loom::testing::gradcheck;
using loom::testing::param;

TEST_CASE("gradcheck: reductions") {
  auto a = param<Shape<3, 4, 5>>(9);
  SUBCASE("sum all") { gradcheck([&] { return sum(a * a); }, a); }
  SUBCASE("sum axis") { gradcheck([&] { return sum<1>(a); }, a); }
  SUBCASE("sum axes keepdims") { gradcheck([&] { return sum<0, 2>(a, keepdims) * a; }, a); }
  SUBCASE("sum negative axis") { gradcheck([&] { return sum<-1>(tanh(a)); }, a); }
  SUBCASE("mean") { gradcheck([&] { return mean<1>(a * 3.0); }, a); }
  SUBCASE("mean keepdims") { gradcheck([&] { return a - mean<-1>(a, keepdims); }, a); }
  SUBCASE("max") { gradcheck([&] { return max<2>(a); }, a); }
  SUBCASE("max keepdims") { gradcheck([&] { return max<0>(a, keepdims) + a; }, a); }
  SUBCASE("logsumexp") { gradcheck([&] { return logsumexp<1>(a * 4.0); }, a); }
  SUBCASE("logsumexp keepdims") { gradcheck([&] { return logsumexp<-1>(a, keepdims) * a; }, a); }
  SUBCASE("softmax") { gradcheck([&] { return softmax<-1>(a * 2.0); }, a); }
  SUBCASE("softmax axis 0") { gradcheck([&] { return softmax<0>(a); }, a); }
  SUBCASE("log_softmax") { gradcheck([&] { return log_softmax<1>(a); }, a); }
}

TEST_CASE("gradcheck: matmul") {
  SUBCASE("2-D") {
    auto a = param<Shape<3, 4>>(10);
    auto b = param<Shape<4, 5>>(11);
    gradcheck([&] { return matmul(a, b); }, a, b);
  }
  SUBCASE("batched with broadcast rhs [2,3,5,4] @ [4,3]") {
    auto a = param<Shape<2, 3, 5, 4>>(12);
    auto b = param<Shape<4, 3>>(13);
    gradcheck([&] { return matmul(a, b); }, a, b);
  }
  SUBCASE("batched broadcast on both sides [2,1,3,4] @ [5,4,2]") {
    auto a = param<Shape<2, 1, 3, 4>>(14);
    auto b = param<Shape<5, 4, 2>>(15);
    gradcheck([&] { return matmul(a, b); }, a, b);
  }
  SUBCASE("transposed operands") {
    auto a = param<Shape<4, 3>>(16);
    auto b = param<Shape<5, 4>>(17);
    gradcheck([&] { return matmul(transpose(a), transpose(b)); }, a, b);
  }
  SUBCASE("depth-1 products (outer products, batch-1 layers)") {
    auto a = param<Shape<5, 1>>(24);
    auto b = param<Shape<1, 6>>(25);
    auto x = param<Shape<1, 4>>(26);
    auto w = param<Shape<3, 4>>(27);
    auto v = param<Shape<4, 3>>(28);
    gradcheck([&] { return matmul(a, b) * 2.0; }, a, b);                       // C = a b^T, row by row
    gradcheck([&] { return matmul(a, slice<1>(b, 0, 6, 2)); }, a, b);           // strided b: the general kernel
    gradcheck([&] { return tanh(matmul(x, v)); }, x, v);                         // dv = x^T g into rows of v's grad
    gradcheck([&] { return tanh(matmul(x, transpose(w))); }, x, w);             // d(w^T) = x^T g into columns of w's grad
  }
  SUBCASE("chain with elementwise") {
    auto w1 = param<Shape<4, 6>>(18);
    auto w2 = param<Shape<6, 2>>(19);
    auto bias = param<Shape<6>>(20);
    auto x = param<Shape<3, 4>>(21);
    gradcheck([&] { return matmul(tanh(matmul(x, w1) + bias), w2); }, w1, w2, bias, x);
  }
}

TEST_CASE("gradcheck: views and shape ops") {
  auto a = param<Shape<2, 3, 4>>(22);
  auto m = param<Shape<3, 4>>(23);
  SUBCASE("transpose") { gradcheck([&] { return transpose(m) * 2.0; }, m); }
  SUBCASE("permute") { gradcheck([&] { return permute<2, 0, 1>(a) * permute<2, 0, 1>(a); }, a); }
  SUBCASE("reshape") { gradcheck([&] { return reshape<Shape<4, 6>>(a * 1.0) * 3.0; }, a); }
  SUBCASE("reshape of a non-contiguous view copies") { gradcheck([&] { return reshape<Shape<12>>(transpose(m)) * 1.5; }, m); }
  SUBCASE("flatten") { gradcheck([&] { return flatten(a) * flatten(a); }, a); }
  SUBCASE("broadcast_to") { gradcheck([&] { return broadcast_to<Shape<5, 3, 4>>(m) * 1.0; }, m); }
  SUBCASE("slice with step") { gradcheck([&] { return slice<1>(a, 0, 4, 2) * 2.0 + slice<1>(a, 1, 3) ; }, a); }
  SUBCASE("slice negative bounds") { gradcheck([&] { return slice<-1>(m, -3, -1) * 1.0; }, m); }
  SUBCASE("flip") { gradcheck([&] { return flip<0>(m) * m; }, m); }
  SUBCASE("concat") { gradcheck([&] { return concat<1>(m, m * 2.0, exp(m)); }, m); }
  SUBCASE("stack") { gradcheck([&] { return stack<1>(m, tanh(m)); }, m); }
  SUBCASE("split") {
    gradcheck([&] {
      auto [p, q] = split<-1>(m, 1, 3);
      return sum<-1>(p * 1.0, keepdims) * sum<-1>(q, keepdims);
    }, m);
  }
  SUBCASE("pad") { gradcheck([&] { return pad<1, 2, 1>(m) * 2.0; }, m); }
  SUBCASE("dilate") { gradcheck([&] { return dilate<0, 2>(m) * 3.0; }, m); }
  SUBCASE("undilate") { gradcheck([&] { return undilate<1, 1>(m) * 1.0; }, m); }
}

TEST_CASE("gradcheck: embedding (gather rows, scatter-add gradient)") {
  auto table = param<Shape<6, 4>>(24);
  Tensor<std::int64_t, Shape<2, 3>> idx;
  const std::int64_t rows[] = {5, 0, 5, 2, 2, 5};  // repeats: the scatter-add must accumulate
  std::copy(std::begin(rows), std::end(rows), idx.data());
  Constant<std::int64_t, Shape<2, 3>> ids(idx);
  SUBCASE("value") {
    auto out = compile(embedding(table, ids)).forward();
    CHECK(out.dims() == Dims<3>{2, 3, 4});
    for (std::size_t k = 0; k < 6; ++k)
      for (std::size_t d = 0; d < 4; ++d) CHECK(out.data()[k * 4 + d] == table.value().data()[rows[k] * 4 + d]);
  }
  SUBCASE("gradient") { gradcheck([&] { return tanh(embedding(table, ids)); }, table); }
  SUBCASE("strided table and indices") {
    gradcheck([&] { return embedding(transpose(transpose(table)), transpose(ids)) * 2.0; }, table);
  }
  SUBCASE("run-time index shape and a bad index") {
    Input<std::int64_t, Shape<dyn>> in;
    auto p = compile(sum(embedding(table, in)));
    Tensor<std::int64_t, Shape<dyn>> ok({3}), bad({2});
    ok.data()[0] = 1, ok.data()[1] = 1, ok.data()[2] = 3;
    bad.data()[0] = 0, bad.data()[1] = 6;
    double want = 0;
    for (std::size_t d = 0; d < 4; ++d) want += 2 * table.value().data()[4 + d] + table.value().data()[12 + d];
    CHECK(p.forward(ok).item() == doctest::Approx(want));
    CHECK_THROWS_WITH_AS(p.forward(bad), doctest::Contains("index 6 outside [0, 6)"), std::out_of_range);
  }
}

// Tensors: storage, views without copies, factories, printing, Eigen interop.
#include <doctest/doctest.h>
#include <loom/loom.hpp>

#include <sstream>

using namespace loom;

TEST_CASE("tensor: storage is aligned, row-major, zero-filled") {
  Tensor<float, Shape<2, 3>> t;
  CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % tensor_alignment == 0);
  CHECK(t.strides() == Strides<2>{3, 1});
  CHECK(t.size() == 6);
  CHECK(t(1, 2) == 0.0f);
  t(1, 2) = 5;
  CHECK(t.data()[5] == 5.0f);
  Tensor<std::int64_t, Shape<dyn, 2>> d({4, 2});
  CHECK(d.dims() == Dims<2>{4, 2});
  CHECK_THROWS_AS((Tensor<float, Shape<dyn, 3>>({2, 4})), shape_error);
  Tensor<std::int32_t, Shape<2, 2, 2, 2, 2, 2>> r6;
  CHECK(r6.size() == 64);
}

TEST_CASE("tensor: views share storage") {
  auto a = arange<double, Shape<2, 3, 4>>();
  SUBCASE("reshape") {
    auto r = a.reshape<Shape<6, dyn>>({6, 4});
    CHECK(r.data() == a.data());
    CHECK(r(5, 3) == 23.0);
    CHECK_THROWS_AS(a.reshape<Shape<dyn>>({5}), shape_error);
  }
  SUBCASE("permute and transpose") {
    auto p = a.permute<2, 0, 1>();
    CHECK(p.dims() == Dims<3>{4, 2, 3});
    CHECK(p(3, 1, 2) == a(1, 2, 3));
    auto t = a.transpose();
    CHECK(t(1, 3, 2) == a(1, 2, 3));
    CHECK_FALSE(t.is_contiguous());
    auto c = t.contiguous();
    CHECK(c.is_contiguous());
    CHECK(c(1, 3, 2) == a(1, 2, 3));
    CHECK_THROWS_AS(t.reshape<Shape<24>>(), shape_error);
  }
  SUBCASE("broadcast_to uses stride 0") {
    auto row = arange<float, Shape<4>>();
    auto b = row.broadcast_to<Shape<3, 4>>();
    CHECK(b.strides()[0] == 0);
    CHECK(b(2, 3) == 3.0f);
  }
  SUBCASE("slice with steps and flip") {
    auto s = a.slice<2>(1, 4, 2);
    CHECK(s.dims() == Dims<3>{2, 3, 2});
    CHECK(s(1, 2, 1) == a(1, 2, 3));
    auto n = a.slice<-1>(-2, 4);
    CHECK(n.dim(2) == 2);
    CHECK(n(0, 0, 0) == 2.0);
    auto f = a.flip<1>();
    CHECK(f(0, 0, 0) == a(0, 2, 0));
    CHECK(f(1, 2, 3) == a(1, 0, 3));
  }
  SUBCASE("assign through a view writes the original") {
    auto s = a.slice<0>(0, 1);
    s.fill(-1);
    CHECK(a(0, 2, 3) == -1.0);
    CHECK(a(1, 0, 0) == 12.0);
  }
}

TEST_CASE("tensor: factories are reproducible") {
  Generator g1(42), g2(42), g3(43);
  auto u1 = uniform<float, Shape<100>>(g1), u2 = uniform<float, Shape<100>>(g2), u3 = uniform<float, Shape<100>>(g3);
  CHECK(allclose(u1, u2, 0, 0));
  CHECK_FALSE(allclose(u1, u3));
  auto n = normal<double, Shape<10000>>(g1, 1.0, 2.0);
  double m = 0, v = 0;
  n.for_each([&](double x) { m += x; });
  m /= 10000;
  n.for_each([&](double x) { v += (x - m) * (x - m); });
  v /= 10000;
  CHECK(m == doctest::Approx(1.0).epsilon(0.05));
  CHECK(std::sqrt(v) == doctest::Approx(2.0).epsilon(0.05));
  CHECK(ones<int, Shape<3>>()(2) == 1);
  CHECK(full<float, Shape<2>>(2.5f)(1) == 2.5f);
}

TEST_CASE("tensor: printing, allclose, Eigen interop") {
  Tensor<float, Shape<2, 2>> t({2, 2}, {1, 2, 3, 4});
  std::ostringstream os;
  os << t;
  CHECK(os.str() == "tensor([[1, 2],\n        [3, 4]], shape=[2, 2], dtype=float32)");
  auto m = t.matrix();
  CHECK(m(1, 0) == 3.0f);
  Eigen::MatrixXf e(2, 2);
  e << 1, 2, 3, 4.00001f;
  auto u = Tensor<float, Shape<2, 2>>::from_eigen(e);
  CHECK(allclose(t, u, 1e-4));
  CHECK_FALSE(allclose(t, u, 0, 0));
  float raw[6] = {0, 1, 2, 3, 4, 5};
  auto w = Tensor<float, Shape<2, 3>>::wrap(raw, {2, 3});
  CHECK(w(1, 1) == 4.0f);
  CHECK(w.data() == raw);
}

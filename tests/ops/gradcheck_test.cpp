// Finite-difference gradient checks (double, central differences) for every op, with broadcasting and
// keepdims cases.
#include "../support/gradcheck.hpp"

using namespace loom;
using loom::testing::gradcheck;
using loom::testing::param;

TEST_CASE("gradcheck: arithmetic with broadcasting and scalars") {
  auto a = param<Shape<3, 4>>(1);
  auto b = param<Shape<4>>(2);
  auto c = param<Shape<3, 1>>(3);
  auto pos = param<Shape<3, 4>>(4, 0.5, 2.0);
  SUBCASE("add") { gradcheck([&] { return a + b + c; }, a, b, c); }
  SUBCASE("sub") { gradcheck([&] { return a - b - c; }, a, b, c); }
  SUBCASE("mul") { gradcheck([&] { return a * b * c; }, a, b, c); }
  SUBCASE("div") { gradcheck([&] { return a / pos + b / (c * c + 1.0); }, a, b, c, pos); }
  SUBCASE("neg") { gradcheck([&] { return -a * b; }, a, b); }
  SUBCASE("scalar forms") { gradcheck([&] { return 2.0 * a - 1.5 + a / 3.0 + 1.0 / pos - (2.0 - b); }, a, b, pos); }
  SUBCASE("pow scalar") { gradcheck([&] { return pow(pos, 3) + pow(pos, 0.5); }, pos); }
  SUBCASE("pow tensor") { gradcheck([&] { return pow(pos, b + 2.0); }, pos, b); }
}

TEST_CASE("gradcheck: unary ops") {
  auto a = param<Shape<2, 5>>(5);
  auto pos = param<Shape<2, 5>>(6, 0.2, 3.0);
  SUBCASE("exp") { gradcheck([&] { return exp(a); }, a); }
  SUBCASE("log") { gradcheck([&] { return log(pos); }, pos); }
  SUBCASE("sqrt") { gradcheck([&] { return sqrt(pos); }, pos); }
  SUBCASE("abs") { gradcheck([&] { return abs(pos - 1.1); }, pos); }
  SUBCASE("tanh") { gradcheck([&] { return tanh(a * 2.0); }, a); }
  SUBCASE("sigmoid") { gradcheck([&] { return sigmoid(a * 3.0); }, a); }
  SUBCASE("relu") { gradcheck([&] { return relu(pos - 1.13); }, pos); }
  SUBCASE("gelu") { gradcheck([&] { return gelu(a * 2.0); }, a); }
  SUBCASE("clamp") { gradcheck([&] { return clamp(pos, 0.7, 2.1); }, pos); }
}

TEST_CASE("gradcheck: maximum, minimum, where, comparisons") {
  auto a = param<Shape<3, 4>>(7);
  auto b = param<Shape<4>>(8);
  SUBCASE("maximum") { gradcheck([&] { return maximum(a, b); }, a, b); }
  SUBCASE("minimum") { gradcheck([&] { return minimum(a, b * 0.5); }, a, b); }
  SUBCASE("where") { gradcheck([&] { return where(greater(a, b), a * 2.0, b * b); }, a, b); }
  SUBCASE("comparison masks carry no gradient") {
    gradcheck([&] { return a * less(a, 0.0) + b * greater_equal(b, 0.0) + equal(a, a) * less_equal(b, 0.1); }, a, b);
  }
}


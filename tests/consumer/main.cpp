// A program outside the loom tree: fits y = 2x with one parameter and checks the gradient.
#include <loom/loom.hpp>

#include <cmath>
#include <cstdio>

int main() {
  using namespace loom;
  Param<float, Shape<1>> w;
  auto x = input<float, Shape<dyn>>();
  auto xt = arange<float, Shape<dyn>>(1, 1, {4});
  x.bind(xt);
  auto step = compile(sum(pow(w * x - x * 2.0f, 2)));
  step.forward();
  step.backward();  // d/dw sum((w-2)^2 x^2) at w = 0: -4 * sum(x^2) = -120
  const float g = w.grad()(0);
  std::printf("grad %g\n", g);
  return std::abs(g + 120.0f) < 1e-3f ? 0 : 1;
}

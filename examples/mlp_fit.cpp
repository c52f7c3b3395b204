// Fits a 2-64-1 MLP to y = sin(3 x0) * x1 with raw loom expressions and plain SGD.
#include <loom/loom.hpp>

#include <cmath>
#include <cstdio>

using namespace loom;

int main() {
  Generator gen(0);
  constexpr std::size_t B = 256;
  auto xs = uniform<float, Shape<dyn, 2>>(gen, -1, 1, {B, 2});
  auto ys = Tensor<float, Shape<dyn, 1>>({B, 1});
  for (std::size_t i = 0; i < B; ++i) ys(i, 0) = std::sin(3 * xs(i, 0)) * xs(i, 1);

  Param<float, Shape<2, 64>> w1(normal<float, Shape<2, 64>>(gen, 0, 0.7));
  Param<float, Shape<64>> b1;
  Param<float, Shape<64, 1>> w2(normal<float, Shape<64, 1>>(gen, 0, 0.125));
  Param<float, Shape<1>> b2;
  auto x = input<float, Shape<dyn, 2>>();
  auto y = input<float, Shape<dyn, 1>>();
  auto pred = matmul(tanh(matmul(x, w1) + b1), w2) + b2;  // the graph is this expression's type
  auto step = compile(mean(pow(pred - y, 2)));             // forward + backward generated here

  auto sgd = [](auto& p, float lr) { p.value().array() -= lr * p.grad().array(); p.zero_grad(); };
  for (int it = 0; it <= 2000; ++it) {
    const float loss = step.forward(xs, ys).item();
    step.backward();
    sgd(w1, 0.1f), sgd(b1, 0.1f), sgd(w2, 0.1f), sgd(b2, 0.1f);
    if (it % 400 == 0) std::printf("step %4d  mse %.5f\n", it, loss);
  }
  std::printf("\n%s", step.describe().c_str());
  return 0;
}

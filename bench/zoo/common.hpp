// bench/zoo/common.hpp — one training step of a model on random data: what every zoo TU compiles
// (the model's forward, loss, generated backward and an optimizer update), so that bench/compile_time
// measures the cost of a realistic model translation unit.
#pragma once
#include <loom/loom.hpp>

#include <cstdio>

namespace zoo {
using namespace loom;

template <class Net, class X, class Y, class XT, class YT>
int train_step(Net& net, const X& x, const Y& y, const XT& xt, const YT& yt) {
  auto step = compile(nn::cross_entropy(net(x), y));
  optim::Adam<float> opt(nn::parameters(net), {.lr = 1e-3});
  x.bind(xt), y.bind(yt);
  opt.zero_grad();
  const float loss = step.forward().item();
  step.backward();
  opt.step();
  std::printf("one step: loss %.4f\n", loss);
  return std::isfinite(loss) ? 0 : 1;
}

template <class S>
Tensor<float, S> random(Dims<S::rank> d) {
  Generator g(1);
  return uniform<float, S>(g, -1, 1, d);
}
inline Tensor<std::int64_t, Shape<dyn>> labels(std::size_t n, std::int64_t classes) {
  Tensor<std::int64_t, Shape<dyn>> t({n});
  for (std::size_t i = 0; i < n; ++i) t(i) = std::int64_t(i) % classes;
  return t;
}
/// One step of a 10-class image classifier over [B, C, HW, HW] on a random batch of 2.
template <class Net, std::size_t C, std::size_t HW>
int image_classifier_step() {
  Generator g(0);
  Net net(g);
  auto x = input<float, Shape<dyn, C, HW, HW>>();
  auto y = input<std::int64_t, Shape<dyn>>();
  return train_step(net, x, y, random<Shape<dyn, C, HW, HW>>({2, C, HW, HW}), labels(2, 10));
}
}  // namespace zoo

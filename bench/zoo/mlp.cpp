// Model zoo: MLP 784-256-128-10 on [B, 784].
#include "common.hpp"
using namespace zoo;
using MLP = nn::Sequential<nn::Linear<784, 256>, nn::ReLU, nn::Linear<256, 128>, nn::ReLU, nn::Linear<128, 10>>;
int main() {
  Generator g(0);
  MLP net(g);
  auto x = input<float, Shape<dyn, 784>>();
  auto y = input<std::int64_t, Shape<dyn>>();
  return train_step(net, x, y, random<Shape<dyn, 784>>({8, 784}), labels(8, 10));
}

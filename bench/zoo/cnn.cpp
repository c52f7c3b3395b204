// Model zoo: a small CNN (two conv + batch-norm + pool blocks, two linear layers) on [B, 1, 28, 28].
#include "common.hpp"
using namespace zoo;
using CNN = nn::Sequential<nn::Conv2d<1, 32, 3, 1, 1>, nn::BatchNorm2d<32>, nn::ReLU, nn::MaxPool2d<2>,
                           nn::Conv2d<32, 64, 3, 1, 1>, nn::BatchNorm2d<64>, nn::ReLU, nn::MaxPool2d<2>, nn::Flatten,
                           nn::Linear<64 * 7 * 7, 128>, nn::ReLU, nn::Dropout<250>, nn::Linear<128, 10>>;
int main() {
  Generator g(0);
  CNN net(g);
  auto x = input<float, Shape<dyn, 1, 28, 28>>();
  auto y = input<std::int64_t, Shape<dyn>>();
  return train_step(net, x, y, random<Shape<dyn, 1, 28, 28>>({2, 1, 28, 28}), labels(2, 10));
}

// The LibTorch reference for compile time: the zoo MLP (784-256-128-10) and one Adam step.
#include <torch/torch.h>

#include <cstdio>

int main() {
  torch::nn::Sequential net(torch::nn::Linear(784, 256), torch::nn::ReLU(), torch::nn::Linear(256, 128),
                            torch::nn::ReLU(), torch::nn::Linear(128, 10));
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-3));
  auto x = torch::rand({8, 784});
  auto y = torch::arange(8) % 10;
  opt.zero_grad();
  auto loss = torch::nn::functional::cross_entropy(net->forward(x), y);
  loss.backward();
  opt.step();
  std::printf("one step: loss %.4f\n", loss.item<float>());
  return 0;
}

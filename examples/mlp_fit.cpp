// Fits a 2-64-1 MLP to y = sin(3 x0) * x1 with raw loom expressions and plain SGD.
// `mlp_fit --device cuda` runs the same program over loom::cuda tensors: on the GPU in the nvcc build
// (mlp_fit_cuda), on host threads through the device code in a build with the device backend.
#include <loom/loom.hpp>

#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string_view>

using namespace loom;

template <class D>
int fit() {
  Generator gen(0);
  constexpr std::size_t B = 256;
  auto xs = uniform<float, Shape<dyn, 2>>(gen, -1, 1, {B, 2});
  auto ys = Tensor<float, Shape<dyn, 1>>({B, 1});
  for (std::size_t i = 0; i < B; ++i) ys(i, 0) = std::sin(3 * xs(i, 0)) * xs(i, 1);

  Param<float, Shape<2, 64>, D> w1(normal<float, Shape<2, 64>>(gen, 0, 0.7).template to<D>());
  Param<float, Shape<64>, D> b1;
  Param<float, Shape<64, 1>, D> w2(normal<float, Shape<64, 1>>(gen, 0, 0.125).template to<D>());
  Param<float, Shape<1>, D> b2;
  auto x = input<float, Shape<dyn, 2>, D>();
  auto y = input<float, Shape<dyn, 1>, D>();
  auto pred = matmul(tanh(matmul(x, w1) + b1), w2) + b2;  // the graph is this expression's type
  auto step = compile(mean(pow(pred - y, 2)));             // forward + backward generated here

  nn::ParamCollector<float, D> params;  // w -= 0.1 dw (and zero the gradients) after every step
  params("w1", w1), params("b1", b1), params("w2", w2), params("b2", b2);
  optim::SGD<float, D> sgd(params.out, {.lr = 0.1});
  const auto xd = xs.template to<D>();
  const auto yd = ys.template to<D>();
  for (int it = 0; it <= 2000; ++it) {
    const float loss = step.forward(xd, yd).template to<cpu>().item();
    step.backward();
    sgd.step_and_zero_grad();
    if (it % 400 == 0) std::printf("step %4d  mse %.5f\n", it, loss);
  }
  std::printf("\n%s", step.describe().c_str());
  return 0;
}

int main(int argc, char** argv) {
  const std::string_view dev = argc == 3 && std::string_view(argv[1]) == "--device" ? argv[2] : "cpu";
  if (argc != 1 && !(argc == 3 && (dev == "cpu" || dev == "cuda"))) {
    std::fprintf(stderr, "usage: %s [--device cpu|cuda]\n", argv[0]);
    return 2;
  }
  try {
    if (dev == "cuda") {
#if defined(__CUDACC__) || defined(LOOM_ENABLE_DEVICE)
      std::printf("device: loom::cuda on the %s system\n", device::system_name());
      return fit<loom::cuda>();
#else
      throw std::invalid_argument("--device cuda: this binary was built without the device backend (build mlp_fit_cuda)");
#endif
    }
    return fit<cpu>();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

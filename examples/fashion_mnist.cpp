// Trains a classifier on Fashion-MNIST (/usr/share/datasets/fashion-mnist, Debian's
// dataset-fashion-mnist) with a progress bar, and reports train loss, test loss and test accuracy per
// epoch. The network is a type; its loss is compiled once. --device cuda trains the model with its
// parameters, activations and optimizer state in device memory (needs the device backend: the
// fashion_mnist_cuda target built by nvcc, or a build with LOOM_ENABLE_DEVICE, which runs device code
// on Thrust's OMP system).
#include <CLI/CLI.hpp>
#include <loom/data/data.hpp>
#include <loom/loom.hpp>

#include "progress.hpp"

#include <chrono>
#include <cstdio>
#include <variant>

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace loom;

using MLP = nn::Sequential<nn::Flatten, nn::Linear<784, 256>, nn::ReLU, nn::Linear<256, 128>, nn::ReLU,
                           nn::Linear<128, 10>>;
static_assert(MLP::num_params == 235146);
// Two conv blocks; 28 -> 14 -> 7 spatially, so the classifier sees 64 * 7 * 7 = 3136 features (writing
// another count there is a compile error that states 3136).
using CNN = nn::Sequential<nn::Conv2d<1, 32, 3, 1, 1>, nn::BatchNorm2d<32>, nn::ReLU, nn::MaxPool2d<2>,
                           nn::Conv2d<32, 64, 3, 1, 1>, nn::BatchNorm2d<64>, nn::ReLU, nn::MaxPool2d<2>,
                           nn::Flatten, nn::Linear<64 * 7 * 7, 128>, nn::ReLU, nn::Dropout<250>, nn::Linear<128, 10>>;
static_assert(CNN::num_params == 421834);
// A small residual network: two stages, each a conv + a residual block, then global average pooling.
template <std::size_t C>
using Block = nn::Residual<nn::Conv2d<C, C, 3, 1, 1>, nn::BatchNorm2d<C>, nn::ReLU, nn::Conv2d<C, C, 3, 1, 1>, nn::BatchNorm2d<C>>;
using ResNet = nn::Sequential<nn::Conv2d<1, 32, 3, 1, 1>, nn::BatchNorm2d<32>, nn::ReLU, nn::MaxPool2d<2>,  // 14x14
                              Block<32>, nn::ReLU,
                              nn::Conv2d<32, 64, 3, 1, 1>, nn::BatchNorm2d<64>, nn::ReLU, nn::MaxPool2d<2>,  // 7x7
                              Block<64>, nn::ReLU, nn::GlobalAvgPool, nn::Linear<64, 10>>;
static_assert(ResNet::num_params == 112394);

struct Options {
  std::string model = "mlp", optimizer = "adam", schedule = "cosine", data_dir = data::FashionMNIST::default_dir;
  std::string device = "cpu";
  std::string checkpoint = "fashion_mnist.safetensors";
  bool resume = false, eval_only = false, augment = false;
  int epochs = 3, threads = 0;
  std::size_t batch = 64;
  double lr = 1e-3;
  std::uint64_t seed = 0;
};

/// Trains Net (declared on the host) with its parameters on device D.
template <class HostNet, class D = cpu>
int train(const Options& o) {
  using Net = nn::on_device_t<HostNet, D>;
  const auto t_load = Clock::now();
  auto train_set = data::FashionMNIST::train(o.data_dir), test_set = data::FashionMNIST::test(o.data_dir);
  data::normalize(test_set, 0.2860f, 0.3530f);
  std::printf("loaded %zu train / %zu test images in %.1f s\n", train_set.size(), test_set.size(),
              std::chrono::duration<double>(Clock::now() - t_load).count());
  Generator gen(o.seed);
  Net net(gen);
  std::printf("model %s: %zu parameters\n%s", o.model.c_str(), Net::num_params,
              HostNet::template summary<Shape<dyn, 1, 28, 28>>().c_str());
  auto x = input<float, Shape<dyn, 1, 28, 28>, D>();
  auto y = input<std::int64_t, Shape<dyn>, D>();
  // Batches are assembled on the host; on a device they are copied over before each step.
  auto dev = [](const auto& t) {
    if constexpr (HostDevice<D>) return t;
    else return t.template to<D>();
  };
  auto logits = net(x);
  auto step = compile(nn::cross_entropy(logits, y));  // forward + backward generated here
  auto loss_only = compile(nn::cross_entropy(logits, y));
  auto predict = compile(logits);
  using Opt = std::variant<optim::SGD<float, D>, optim::Adam<float, D>, optim::AdamW<float, D>>;
  auto params = nn::parameters<float, D>(net);
  Opt opt = o.optimizer == "sgd"    ? Opt(optim::SGD<float, D>(params, {.lr = o.lr, .momentum = 0.9}))
            : o.optimizer == "adamw" ? Opt(optim::AdamW<float, D>(params, {.lr = o.lr, .weight_decay = 0.01}))
                                     : Opt(optim::Adam<float, D>(params, {.lr = o.lr}));
  // Training samples are augmented (optionally) and normalized as each batch is assembled, on the loader's
  // background thread; the test set was normalized once above.
  std::vector<data::Transform> transforms;
  if (o.augment) transforms = {data::RandomCrop{2}, data::RandomHorizontalFlip{}};
  transforms.push_back(data::Normalize{{0.2860f}, {0.3530f}});
  data::DataLoader loader(train_set, {.batch = o.batch, .shuffle = true, .seed = o.seed, .transforms = transforms});
  data::DataLoader test_loader(test_set, {.batch = 1000, .shuffle = false});
  auto evaluate = [&] {
    net.eval();  // batch norm uses its running statistics, dropout is off
    double test_loss = 0;
    std::size_t correct = 0;
    for (auto it = test_loader.begin(); it != test_loader.end(); ++it) {
      const auto& b = *it;
      const auto bx = dev(b.x);
      test_loss += loss_only.forward(bx, dev(b.y)).item() * double(b.y.size());
      const auto out = predict.forward(bx).template to<cpu>();
      for (std::size_t i = 0; i < b.y.size(); ++i) {
        std::size_t best = 0;
        for (std::size_t c = 1; c < 10; ++c)
          if (out(i, c) > out(i, best)) best = c;
        correct += static_cast<std::int64_t>(best) == b.y(i);
      }
    }
    net.train();
    return std::pair{test_loss / double(test_set.size()), double(correct) / double(test_set.size())};
  };
  int first_epoch = 1;
  if (o.resume || o.eval_only) {
    const auto file = io::load_module(o.checkpoint, net);
    std::int64_t done = 0;
    io::restore(file, "epoch", &done, {1}, o.checkpoint);
    if (o.resume) std::visit([&](auto& op) { io::restore_optimizer(op, file, o.checkpoint); }, opt);
    first_epoch = int(done) + 1;
    std::printf("restored %s (after epoch %lld)\n", o.checkpoint.c_str(), static_cast<long long>(done));
  }
  if (o.eval_only) {
    const auto [loss, acc] = evaluate();
    std::printf("test loss %.4f  test accuracy %.2f%%\n", loss, 100 * acc);
    return 0;
  }
  const std::size_t total_steps = loader.size() * std::size_t(o.epochs);
  std::size_t global_step = loader.size() * std::size_t(first_epoch - 1);
  for (int epoch = first_epoch; epoch <= o.epochs; ++epoch) {
    const auto t0 = Clock::now();
    double total = 0;
    std::size_t n = 0;
    for (auto it = loader.begin(); it != loader.end(); ++it) {
      const auto& b = *it;
      total += step.forward(dev(b.x), dev(b.y)).item();
      step.backward();
      const double lr = o.schedule == "cosine" ? optim::cosine_lr(o.lr, global_step++, total_steps) : o.lr;
      std::visit([lr](auto& op) { op.options().lr = lr; op.step_and_zero_grad(); }, opt);
      if (++n % 25 == 0 || n == loader.size()) progress(epoch, n, loader.size(), t0, total / double(n));
    }
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    const auto [test_loss, acc] = evaluate();
    std::printf("\nepoch %d: train loss %.4f  test loss %.4f  test accuracy %.2f%%  (%.1f s)\n", epoch, total / n,
                test_loss, 100.0 * acc, secs);
    auto extra = std::visit([](auto& op) { return io::optimizer_state(op); }, opt);
    const std::int64_t e = epoch;
    extra["epoch"] = io::stored(&e, {1});
    io::save_module(o.checkpoint, net, extra);  // atomic: a crash here keeps the previous file
  }
  std::printf("checkpoint: %s\n", o.checkpoint.c_str());
  return 0;
}

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Train a loom model on Fashion-MNIST"};
  app.add_option("--model", o.model, "network: mlp | cnn | resnet")->check(CLI::IsMember({"mlp", "cnn", "resnet"}));
  app.add_option("--epochs", o.epochs, "epochs")->check(CLI::PositiveNumber);
  app.add_option("--batch", o.batch, "batch size")->check(CLI::PositiveNumber);
  app.add_option("--lr", o.lr, "learning rate");
  app.add_option("--optimizer", o.optimizer, "sgd (momentum 0.9) | adam | adamw")->check(CLI::IsMember({"sgd", "adam", "adamw"}));
  app.add_option("--schedule", o.schedule, "learning-rate schedule: cosine | constant")->check(CLI::IsMember({"cosine", "constant"}));
  app.add_option("--threads", o.threads, "OpenMP threads (0: all cores)");
  app.add_option("--device", o.device, "cpu | cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--seed", o.seed, "seed for initialization and shuffling");
  app.add_option("--data-dir", o.data_dir, "folder with the four IDX files");
  app.add_option("--checkpoint", o.checkpoint, "safetensors file written after every epoch");
  app.add_flag("--augment", o.augment, "random crop (padding 2) and horizontal flip of training images");
  app.add_flag("--resume", o.resume, "continue from --checkpoint (model, optimizer state, epoch)");
  app.add_flag("--eval-only", o.eval_only, "load --checkpoint and report the test loss and accuracy");
  CLI11_PARSE(app, argc, argv);
#ifdef _OPENMP
  if (o.threads > 0) omp_set_num_threads(o.threads);
#endif
  try {
    if (o.device == "cuda") {
#if defined(__CUDACC__) || defined(LOOM_ENABLE_DEVICE)
      std::printf("device: loom::cuda on the %s system\n", device::system_name());
      if (o.model == "cnn") return train<CNN, loom::cuda>(o);
      if (o.model == "resnet") return train<ResNet, loom::cuda>(o);
      return train<MLP, loom::cuda>(o);
#else
      throw std::invalid_argument("--device cuda: this binary was built without the device backend (build fashion_mnist_cuda)");
#endif
    }
    if (o.model == "cnn") return train<CNN>(o);
    if (o.model == "resnet") return train<ResNet>(o);
    return train<MLP>(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

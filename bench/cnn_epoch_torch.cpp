// The LibTorch side of the small-CNN Fashion-MNIST epoch: the model of `examples/fashion_mnist --model
// cnn` (conv 1->32 + batch norm + ReLU + 2x2 max-pool, conv 32->64 + the same, linear 3136->128, ReLU,
// dropout 0.25, linear 128->10), Adam 1e-3, batch 64, shuffled, inputs normalized with the same mean and
// deviation; prints the epoch's time and the test accuracy. Compare with
//   build/release/examples/fashion_mnist --model cnn --epochs 1 --schedule constant --threads N
//   OMP_NUM_THREADS=N build/bench/bench/cnn_epoch_torch [data dir]
#include <torch/torch.h>
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace {
std::vector<unsigned char> gunzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path);
  std::vector<unsigned char> out;
  unsigned char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + n);
  gzclose(f);
  return out;
}
/// IDX images [N, 1, 28, 28] normalized, and labels [N].
std::pair<torch::Tensor, torch::Tensor> load(const std::string& dir, const std::string& split) {
  const auto img = gunzip(dir + "/" + split + "-images-idx3-ubyte.gz");
  const auto lab = gunzip(dir + "/" + split + "-labels-idx1-ubyte.gz");
  const int64_t n = static_cast<int64_t>(lab.size() - 8);
  auto x = torch::from_blob(const_cast<unsigned char*>(img.data() + 16), {n, 1, 28, 28}, torch::kUInt8)
               .to(torch::kFloat32)
               .div(255.0)
               .sub(0.2860)
               .div(0.3530);
  auto y = torch::from_blob(const_cast<unsigned char*>(lab.data() + 8), {n}, torch::kUInt8).to(torch::kInt64);
  return {x.clone(), y.clone()};
}
}  // namespace

int main(int argc, char** argv) {
  if (const char* t = std::getenv("OMP_NUM_THREADS")) torch::set_num_threads(std::atoi(t));
  const std::string dir = argc > 1 ? argv[1] : "/usr/share/datasets/fashion-mnist";
  torch::manual_seed(0);
  auto [xtr, ytr] = load(dir, "train");
  auto [xte, yte] = load(dir, "t10k");
  torch::nn::Sequential net(
      torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 32, 3).padding(1)), torch::nn::BatchNorm2d(32), torch::nn::ReLU(),
      torch::nn::MaxPool2d(2), torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 3).padding(1)),
      torch::nn::BatchNorm2d(64), torch::nn::ReLU(), torch::nn::MaxPool2d(2), torch::nn::Flatten(),
      torch::nn::Linear(64 * 7 * 7, 128), torch::nn::ReLU(), torch::nn::Dropout(0.25), torch::nn::Linear(128, 10));
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(1e-3));
  const int64_t n = xtr.size(0), batch = 64;
  const auto t0 = std::chrono::steady_clock::now();
  net->train();
  auto perm = torch::randperm(n);
  for (int64_t i = 0; i + batch <= n; i += batch) {
    auto idx = perm.slice(0, i, i + batch);
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(xtr.index_select(0, idx)), ytr.index_select(0, idx));
    loss.backward();
    opt.step();
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  net->eval();
  torch::NoGradGuard ng;
  const auto correct = net->forward(xte).argmax(1).eq(yte).sum().item<int64_t>();
  std::printf("LibTorch small CNN: 1 epoch (%lld steps of %lld) in %.1f s, test accuracy %.2f %%\n",
              static_cast<long long>(n / batch), static_cast<long long>(batch), secs,
              100.0 * double(correct) / double(yte.size(0)));
  return 0;
}

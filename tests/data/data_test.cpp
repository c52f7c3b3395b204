// Data: IDX files (plain and gzip) with every kind of bad input, the loader's batching and seeded
// shuffling, and an end-to-end training run on a slice of Fashion-MNIST.
#include <doctest/doctest.h>
#include <loom/data/loader.hpp>
#include <loom/loom.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

using namespace loom;
namespace fs = std::filesystem;

namespace {
std::string tmp_path(const std::string& name) { return (fs::temp_directory_path() / ("loom_test_" + name)).string(); }

void write_idx(const std::string& path, const std::vector<std::uint32_t>& dims, const std::vector<std::uint8_t>& data,
               std::uint8_t type = 0x08, bool gzip = false) {
  std::vector<std::uint8_t> bytes{0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (auto d : dims)
    for (int s = 24; s >= 0; s -= 8) bytes.push_back(static_cast<std::uint8_t>(d >> s));
  bytes.insert(bytes.end(), data.begin(), data.end());
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
}
}  // namespace

TEST_CASE("data: IDX files, plain and gzip") {
  std::vector<std::uint8_t> pixels(3 * 2 * 2);
  for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<std::uint8_t>(i * 20);
  const auto im = tmp_path("im.idx.gz"), lb = tmp_path("lb.idx");
  write_idx(im, {3, 2, 2}, pixels, 0x08, true);
  write_idx(lb, {3}, {7, 1, 9});
  auto ds = data::load_idx_pair(im, lb);
  CHECK(ds.size() == 3);
  CHECK(ds.images.dims() == Dims<4>{3, 1, 2, 2});
  CHECK(ds.images(2, 0, 1, 1) == doctest::Approx(220.0 / 255.0));
  CHECK(ds.labels(2) == 9);

  SUBCASE("missing file names the path and the package") {
    CHECK_THROWS_WITH_AS(data::read_idx("/nonexistent/x.gz", "dataset-fashion-mnist"),
                         doctest::Contains("/nonexistent/x.gz does not exist (install it with: apt-get install dataset-fashion-mnist)"),
                         data::data_error);
  }
  SUBCASE("truncated data") {
    const auto t = tmp_path("trunc.idx");
    write_idx(t, {3, 2, 2}, std::vector<std::uint8_t>(5));
    CHECK_THROWS_WITH_AS(data::read_idx(t), doctest::Contains("truncated or corrupt"), data::data_error);
  }
  SUBCASE("wrong magic") {
    const auto t = tmp_path("magic.idx");
    write_idx(t, {3}, {1, 2, 3}, 0x0D);
    CHECK_THROWS_WITH_AS(data::read_idx(t), doctest::Contains("not an IDX file of unsigned bytes"), data::data_error);
  }
  SUBCASE("image and label counts differ") {
    const auto t = tmp_path("lb2.idx");
    write_idx(t, {2}, {1, 2});
    CHECK_THROWS_WITH_AS(data::load_idx_pair(im, t), doctest::Contains("holds 3 images but"), data::data_error);
  }
}

TEST_CASE("data: loader batches, drops the last partial batch on request, shuffles reproducibly") {
  data::ImageDataset ds{Tensor<float, Shape<dyn, 1, dyn, dyn>>({10, 1, 1, 1}), Tensor<std::int64_t, Shape<dyn>>({10})};
  for (int i = 0; i < 10; ++i) ds.images(i, 0, 0, 0) = float(i), ds.labels(i) = i;
  data::DataLoader plain(ds, {.batch = 4, .shuffle = false});
  CHECK(plain.size() == 3);
  std::vector<std::int64_t> seen;
  std::vector<std::size_t> sizes;
  for (auto it = plain.begin(); it != plain.end(); ++it) {
    const auto& b = *it;
    sizes.push_back(b.y.size());
    for (std::size_t k = 0; k < b.y.size(); ++k) {
      seen.push_back(b.y(k));
      CHECK(b.x(k, 0, 0, 0) == float(b.y(k)));
    }
  }
  CHECK(sizes == std::vector<std::size_t>{4, 4, 2});
  CHECK(seen == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  data::DataLoader dropped(ds, {.batch = 4, .drop_last = true});
  CHECK(dropped.size() == 2);
  auto epoch = [&](data::DataLoader& l) {
    std::vector<std::int64_t> v;
    for (auto it = l.begin(); it != l.end(); ++it)
      for (std::size_t k = 0; k < (*it).y.size(); ++k) v.push_back((*it).y(k));
    return v;
  };
  data::DataLoader a(ds, {.batch = 3, .shuffle = true, .seed = 5}), b(ds, {.batch = 3, .shuffle = true, .seed = 5});
  const auto e1 = epoch(a), e2 = epoch(a);
  CHECK(e1 == epoch(b));
  CHECK(e1 != e2);  // a new order each epoch
  auto sorted = e1;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == seen);
}

TEST_CASE("data: an MLP learns on a slice of Fashion-MNIST (end to end)") {
  auto full = data::FashionMNIST::test();  // 10k images: 4k to train, 1k to evaluate
  auto slice = [&](std::size_t from, std::size_t n) {
    data::ImageDataset d{Tensor<float, Shape<dyn, 1, dyn, dyn>>({n, 1, 28, 28}), Tensor<std::int64_t, Shape<dyn>>({n})};
    std::copy_n(full.images.data() + from * 784, n * 784, d.images.data());
    std::copy_n(full.labels.data() + from, n, d.labels.data());
    return d;
  };
  const auto train = slice(0, 4000), held = slice(9000, 1000);
  Generator g(0);
  nn::Sequential<nn::Flatten, nn::Linear<784, 64>, nn::ReLU, nn::Linear<64, 10>> net(g);
  auto x = input<float, Shape<dyn, 1, 28, 28>>();
  auto y = input<std::int64_t, Shape<dyn>>();
  auto logits = net(x);
  auto step = compile(nn::cross_entropy(logits, y));
  auto predict = compile(logits);
  optim::Adam<float> opt(nn::parameters(net), {.lr = 2e-3});
  auto accuracy = [&] {
    auto o = predict.forward(held.images);
    std::size_t ok = 0;
    for (std::size_t i = 0; i < held.size(); ++i) {
      std::size_t best = 0;
      for (std::size_t c = 1; c < 10; ++c)
        if (o(i, c) > o(i, best)) best = c;
      ok += static_cast<std::int64_t>(best) == held.labels(i);
    }
    return double(ok) / double(held.size());
  };
  const double before = accuracy();
  data::DataLoader loader(train, {.batch = 50, .shuffle = true, .seed = 1});
  double first = 0, last = 0;
  for (int epoch = 0; epoch < 4; ++epoch) {
    double total = 0;
    for (auto it = loader.begin(); it != loader.end(); ++it) {
      total += step.forward((*it).x, (*it).y).item();
      step.backward();
      opt.step();
      opt.zero_grad();
    }
    (epoch == 0 ? first : last) = total / double(loader.size());
  }
  const double after = accuracy();
  MESSAGE("loss " << first << " -> " << last << ", held-out accuracy " << before << " -> " << after);
  CHECK(last < 0.7 * first);
  CHECK(after > 0.75);
  CHECK(after > before + 0.4);
}

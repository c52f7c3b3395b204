// Data: IDX files (plain and gzip) with every kind of bad input, the loader's batching and seeded
// shuffling, and an end-to-end training run on a slice of Fashion-MNIST.
#include <doctest/doctest.h>
#include <loom/data/data.hpp>
#include <loom/loom.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

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
  data::ImageDataset ds{data::Images({10, 1, 1, 1}), data::Labels({10})};
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

namespace {
/// A CIFAR-10 batch file of n records: label r % 10, pixel k of record r = (r * 7 + k) % 256.
std::string write_cifar(const std::string& name, std::size_t n, std::size_t truncate = 0, int bad_label_at = -1) {
  std::vector<std::uint8_t> bytes;
  for (std::size_t r = 0; r < n; ++r) {
    bytes.push_back(static_cast<std::uint8_t>(int(r) == bad_label_at ? 10 : r % 10));
    for (std::size_t k = 0; k < 3072; ++k) bytes.push_back(static_cast<std::uint8_t>((r * 7 + k) % 256));
  }
  bytes.resize(bytes.size() - truncate);
  const auto path = tmp_path(name);
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return path;
}
}  // namespace

TEST_CASE("data: CIFAR-10 binary batches") {
  const auto a = write_cifar("cifar_a.bin", 3), b = write_cifar("cifar_b.bin", 2);
  const auto ds = data::CIFAR10::read({a, b});
  REQUIRE(ds.images.dims() == Dims<4>{5, 3, 32, 32});
  CHECK(ds.labels(2) == 2);
  CHECK(ds.labels(4) == 1);  // second file's record 1
  // sample 1, channel 2 (blue), row 3, column 4: pixel byte k = 2 * 1024 + 3 * 32 + 4
  CHECK(ds.images(1, 2, 3, 4) == doctest::Approx(float((7 + 2 * 1024 + 3 * 32 + 4) % 256) / 255.0f));
  CHECK(ds.images(3, 0, 0, 0) == doctest::Approx(0.0f));
  CHECK_THROWS_WITH_AS(data::CIFAR10::read({write_cifar("cifar_t.bin", 2, 5)}),
                       doctest::Contains("is truncated or corrupt: 6141 bytes is not a whole number of 3073-byte"),
                       data::data_error);
  CHECK_THROWS_WITH_AS(data::CIFAR10::read({write_cifar("cifar_l.bin", 3, 0, 1)}),
                       doctest::Contains("record 1 has label 10 outside [0, 10)"), data::data_error);
  CHECK_THROWS_WITH_AS(data::CIFAR10::train("/nonexistent/cifar"),
                       doctest::Contains("/nonexistent/cifar/data_batch_1.bin does not exist"), data::data_error);
  for (const auto* f : {"cifar_a.bin", "cifar_b.bin", "cifar_t.bin", "cifar_l.bin"}) fs::remove(tmp_path(f));
}

TEST_CASE("data: transforms") {
  std::vector<float> img(2 * 3 * 4), scratch(img.size());
  auto reset = [&] { std::iota(img.begin(), img.end(), 1.0f); };
  Generator g(3);
  auto sample = [&] { return data::Sample{img.data(), scratch.data(), 2, 3, 4, g}; };
  SUBCASE("horizontal flip mirrors every row, or leaves the sample alone") {
    reset();
    auto s = sample();
    data::RandomHorizontalFlip{1.0}(s);
    CHECK(img[0] == 4.0f);
    CHECK(img[3] == 1.0f);
    CHECK(img[12 + 4] == 20.0f);  // channel 1, row 1 = {17..20} reversed
    reset();
    data::RandomHorizontalFlip{0.0}(s);
    CHECK(img[0] == 1.0f);
  }
  SUBCASE("random crop: a zero-padded shift within the padding, every offset reachable") {
    std::set<std::pair<long, long>> offsets;
    for (int trial = 0; trial < 400; ++trial) {
      reset();
      auto s = sample();
      data::RandomCrop{1}(s);
      // find the shift (dy, dx) that explains the output
      int matches = 0;
      for (long dy = -1; dy <= 1; ++dy)
        for (long dx = -1; dx <= 1; ++dx) {
          bool ok = true;
          for (long c = 0; c < 2; ++c)
            for (long i = 0; i < 3; ++i)
              for (long j = 0; j < 4; ++j) {
                const long si = i + dy, sj = j + dx;
                const float want = (si < 0 || si >= 3 || sj < 0 || sj >= 4) ? 0.0f : float((c * 3 + si) * 4 + sj + 1);
                ok = ok && img[std::size_t((c * 3 + i) * 4 + j)] == want;
              }
          if (ok) ++matches, offsets.insert({dy, dx});
        }
      CHECK(matches == 1);
    }
    CHECK(offsets.size() == 9);
  }
  SUBCASE("normalize per channel") {
    reset();
    auto s = sample();
    data::Normalize{{1.0f, 13.0f}, {2.0f, 4.0f}}(s);
    CHECK(img[0] == 0.0f);
    CHECK(img[11] == doctest::Approx(5.5f));  // (12 - 1) / 2
    CHECK(img[12] == 0.0f);
    CHECK(img[23] == doctest::Approx(11.0f / 4.0f));
    CHECK_THROWS_WITH_AS(data::Normalize({{0.f, 0.f, 0.f}, {1.f, 1.f, 1.f}})(s), doctest::Contains("for 2 channels"),
                         std::invalid_argument);
  }
}

TEST_CASE("data: the background thread prepares the same batches as the calling thread") {
  data::ImageDataset ds{data::Images({37, 2, 5, 5}), data::Labels({37})};
  Generator g(9);
  ds.images.for_each([&](float& v) { v = float(g.uniform()); });
  for (std::size_t i = 0; i < 37; ++i) ds.labels(i) = std::int64_t(i);
  auto options = [](bool prefetch) {
    return data::LoaderOptions{.batch = 8, .shuffle = true, .seed = 11, .prefetch = prefetch,
                               .transforms = {data::RandomCrop{2}, data::RandomHorizontalFlip{}, data::Normalize{{0.5f}, {0.25f}}}};
  };
  data::DataLoader threaded(ds, options(true)), inline_(ds, options(false));
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::vector<float> a, b;
    std::vector<std::int64_t> la, lb;
    for (auto it = threaded.begin(); it != threaded.end(); ++it) {
      const auto& batch = *it;
      a.insert(a.end(), batch.x.data(), batch.x.data() + batch.x.size());
      la.insert(la.end(), batch.y.data(), batch.y.data() + batch.y.size());
    }
    for (auto it = inline_.begin(); it != inline_.end(); ++it) {
      const auto& batch = *it;
      b.insert(b.end(), batch.x.data(), batch.x.data() + batch.x.size());
      lb.insert(lb.end(), batch.y.data(), batch.y.data() + batch.y.size());
    }
    CHECK(a == b);
    CHECK(la == lb);
    auto sorted = la;
    std::sort(sorted.begin(), sorted.end());
    CHECK(sorted.size() == 37);
    CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
  }
  SUBCASE("an epoch abandoned half way, then a new one") {
    auto it = threaded.begin();
    ++it;
    (void)*it;
    std::size_t n = 0;
    for (auto jt = threaded.begin(); jt != threaded.end(); ++jt) n += (*jt).y.size();
    CHECK(n == 37);
  }
  SUBCASE("a transform's error reaches the caller") {
    data::DataLoader bad(ds, {.batch = 8, .transforms = {data::Normalize{{0.f, 0.f, 0.f}, {1.f, 1.f, 1.f}}}});
    CHECK_THROWS_WITH_AS((void)*bad.begin(), doctest::Contains("for 2 channels"), std::invalid_argument);
  }
}

TEST_CASE("data: a tabular dataset [N, F] through the same loader") {
  data::TensorDataset<2> ds{Tensor<float, DynShape<2>>({7, 3}), data::Labels({7})};
  for (std::size_t i = 0; i < 7; ++i) {
    ds.labels(i) = std::int64_t(i);
    for (std::size_t f = 0; f < 3; ++f) ds.images(i, f) = float(10 * i + f);
  }
  data::Loader<2> loader(ds, {.batch = 3, .shuffle = true, .seed = 2, .transforms = {data::Normalize{{5.0f}, {10.0f}}}});
  std::size_t n = 0;
  for (auto it = loader.begin(); it != loader.end(); ++it) {
    const auto& b = *it;
    CHECK(b.x.dims()[1] == 3);
    for (std::size_t k = 0; k < b.y.size(); ++k, ++n)
      CHECK(b.x(k, 2) == doctest::Approx((float(10 * b.y(k) + 2) - 5.0f) / 10.0f));
  }
  CHECK(n == 7);
  CHECK_THROWS_AS((data::TensorDataset<2>{Tensor<float, DynShape<2>>({7, 3}), data::Labels({6})}), shape_error);
}

TEST_CASE("data: text corpora, vocabularies, batchify and get_batch") {
  SUBCASE("characters") {
    auto c = data::Corpus::from_text("abcab\n", "ba");
    CHECK(c.vocab.size() == 4);
    CHECK(c.train == std::vector<std::int64_t>{0, 1, 2, 0, 1, 3});
    CHECK(c.valid == std::vector<std::int64_t>{1, 0});
    CHECK(c.vocab.decode(c.vocab.encode("cab")) == "cab");
    CHECK_THROWS_WITH_AS(c.vocab.encode("abz"), doctest::Contains("'z' is not in the vocabulary (4 tokens)"), data::data_error);
    CHECK_THROWS_WITH_AS(data::Corpus::from_text("", "x"), doctest::Contains("the training text is empty"), data::data_error);
  }
  SUBCASE("words") {
    auto c = data::Corpus::from_text("the cat\nthe dog\n", "", data::Vocabulary::Level::words);
    CHECK(c.vocab.size() == 4);  // the, cat, <eos>, dog
    CHECK(c.train == std::vector<std::int64_t>{0, 1, 2, 0, 3, 2});
    CHECK(c.vocab.decode(c.train) == "the cat\nthe dog\n");
  }
  SUBCASE("batchify into columns, windows of inputs and next-token targets") {
    std::vector<std::int64_t> ids(23);
    std::iota(ids.begin(), ids.end(), 0);
    const auto d = data::batchify(ids, 3);  // 7 rows, the last 2 tokens dropped
    REQUIRE(d.dims() == Dims<2>{7, 3});
    CHECK(d(0, 1) == 7);
    CHECK(d(6, 2) == 20);
    auto [x, y] = data::get_batch(d, 4, 5);  // only 2 rows of targets remain
    CHECK(x.dims() == Dims<2>{2, 3});
    CHECK(x(0, 0) == 4);
    CHECK(y(1, 2) == 20);
    CHECK_THROWS_AS(data::get_batch(d, 6, 5), std::out_of_range);
    CHECK_THROWS_WITH_AS(data::batchify(ids, 12), doctest::Contains("too few"), data::data_error);
  }
  SUBCASE("Debian's fortunes, split deterministically") {
    const auto a = data::Fortunes::load(), b = data::Fortunes::load();
    CHECK(a.train.size() > 100000);
    CHECK(a.valid.size() > a.train.size() / 20);
    CHECK(a.valid.size() < a.train.size() / 5);
    CHECK(a.train == b.train);
    CHECK(a.valid == b.valid);
    CHECK(a.vocab.size() < 256);
    CHECK_THROWS_WITH_AS(data::Fortunes::load("/nonexistent"), doctest::Contains("/nonexistent/fortunes does not exist (install it with: apt-get install fortunes)"),
                         data::data_error);
  }
}

TEST_CASE("data: an MLP learns on a slice of Fashion-MNIST (end to end)") {
  auto full = data::FashionMNIST::test();  // 10k images: 4k to train, 1k to evaluate
  auto slice = [&](std::size_t from, std::size_t n) {
    data::ImageDataset d{data::Images({n, 1, 28, 28}), data::Labels({n})};
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

TEST_CASE("data: MNIST reads the same IDX layout from a folder the caller names") {
  const auto ds = data::MNIST::test(data::FashionMNIST::default_dir);  // same file names and format
  CHECK(ds.images.dims() == Dims<4>{10000, 1, 28, 28});
  CHECK_THROWS_WITH_AS(data::MNIST::train("/nonexistent/mnist"),
                       doctest::Contains("/nonexistent/mnist/train-images-idx3-ubyte.gz does not exist"), data::data_error);
}

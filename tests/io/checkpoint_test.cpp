// Checkpoints: the safetensors format both ways against a file written by an independent Python
// writer, module and optimizer round trips, shape mismatches, bad files, atomic replacement.
#include <doctest/doctest.h>
#include <loom/loom.hpp>

#include <filesystem>
#include <fstream>

#include "../support/fixtures.hpp"

using namespace loom;
namespace fs = std::filesystem;

namespace {
std::string fixture() { return testing::fixture_dir() + "/checkpoint.safetensors"; }
std::string tmp_path(const std::string& name) { return (fs::temp_directory_path() / ("loom_ckpt_" + name)).string(); }
std::string read_all(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}
using Net = nn::Sequential<nn::Linear<3, 2>>;
}  // namespace

TEST_CASE("io: reads a safetensors file written by another tool, and writes the same bytes") {
  const auto file = io::load(fixture());
  REQUIRE(file.size() == 4);
  const auto& w = file.at("0.weight");
  CHECK(w.dtype == "F32");
  CHECK(w.shape == std::vector<std::size_t>{2, 3});
  float wv[6];
  io::restore(file, "0.weight", wv, {2, 3}, fixture());
  CHECK(wv[5] == 1.5f);
  double scale = 0;
  io::restore(file, "scale", &scale, {1}, fixture());
  CHECK(scale == 3.141592653589793);
  std::int64_t steps = 0;
  io::restore(file, "steps", &steps, {1}, fixture());
  CHECK(steps == 42);
  const auto out = tmp_path("same.safetensors");
  io::save(out, file, {{"format", "pt"}});
  CHECK(read_all(out) == read_all(fixture()));
}

TEST_CASE("io: a module and its optimizer round-trip; mismatches and bad files are clear errors") {
  Generator g(1);
  Net a(g), b(g);
  CHECK_FALSE(a.get<0>().weight.value()(0, 0) == b.get<0>().weight.value()(0, 0));
  optim::Adam<float> opt_a(nn::parameters(a), {.lr = 0.1});
  std::fill_n(a.get<0>().weight.grad().data(), 6, 1.0f);
  opt_a.step();
  const auto path = tmp_path("net.safetensors");
  io::save_module(path, a, io::optimizer_state(opt_a));
  CHECK_FALSE(fs::exists(path + ".tmp"));

  optim::Adam<float> opt_b(nn::parameters(b), {.lr = 0.1});
  const auto file = io::load_module(path, b);
  io::restore_optimizer(opt_b, file, path);
  CHECK(opt_b.step_count() == 1);
  CHECK(allclose(a.get<0>().weight.value(), b.get<0>().weight.value(), 0, 0));
  // The next step is identical: the Adam moments came back too.
  std::fill_n(a.get<0>().weight.grad().data(), 6, 0.5f);
  std::fill_n(b.get<0>().weight.grad().data(), 6, 0.5f);
  opt_a.step();
  opt_b.step();
  CHECK(allclose(a.get<0>().weight.value(), b.get<0>().weight.value(), 0, 0));

  nn::Sequential<nn::Linear<4, 2>> other(g);
  const std::string mismatch = "tensor '0.weight' has shape [2, 3] in " + path + " but [2, 4] in the model";
  CHECK_THROWS_WITH_AS(io::load_module(path, other), doctest::Contains(mismatch.c_str()), io::checkpoint_error);
  CHECK_THROWS_WITH_AS(io::load("/nonexistent/x.safetensors"), doctest::Contains("cannot open /nonexistent/x.safetensors"),
                       io::checkpoint_error);
  const auto cut = tmp_path("cut.safetensors");
  {
    const auto bytes = read_all(path);
    std::ofstream(cut, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() - 8));
  }
  CHECK_THROWS_WITH_AS(io::load(cut), doctest::Contains("lies outside the file"), io::checkpoint_error);
}

TEST_CASE("io: a failed save leaves the previous checkpoint intact") {
  Generator g(2);
  Net a(g);
  const auto path = tmp_path("atomic.safetensors");
  io::save_module(path, a);
  const auto before = read_all(path);
  fs::remove_all(path + ".tmp");
  fs::create_directory(path + ".tmp");  // the temporary file cannot be created: the save fails
  Net b(g);
  CHECK_THROWS_AS(io::save_module(path, b), io::checkpoint_error);
  CHECK(read_all(path) == before);
  fs::remove_all(path + ".tmp");
}

TEST_CASE("io: batch-norm running statistics travel with the checkpoint") {
  Generator g(3);
  using BNNet = nn::Sequential<nn::Linear<3, 4>, nn::BatchNorm1d<4>>;
  BNNet a(g), b(g);
  (*a.get<1>().running_mean)[2] = 0.75;
  (*a.get<1>().running_var)[1] = 2.5;
  const auto path = tmp_path("bn.safetensors");
  io::save_module(path, a);
  io::load_module(path, b);
  CHECK((*b.get<1>().running_mean)[2] == 0.75);
  CHECK((*b.get<1>().running_var)[1] == 2.5);
}

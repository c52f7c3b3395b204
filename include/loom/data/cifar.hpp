// loom/data/cifar.hpp — the CIFAR-10 binary batches (cifar-10-batches-bin: data_batch_1..5.bin,
// test_batch.bin). A record is one label byte (0-9) then 3072 pixel bytes: the 32x32 red plane, then
// green, then blue, each row-major — exactly the [3, 32, 32] layout of a sample.
#pragma once
#include <fstream>
#include <initializer_list>

#include "idx.hpp"

namespace loom::data {

struct CIFAR10 {
  static constexpr std::size_t channels = 3, height = 32, width = 32, classes = 10;
  static constexpr std::size_t record = 1 + channels * height * width;
  static constexpr const char* default_dir = "cifar-10-batches-bin";

  /// Reads batch files into one dataset (pixels scaled to [0, 1]). Throws data_error naming the path
  /// when a file is missing, not a whole number of records, or holds a label outside [0, 10).
  static ImageDataset read(const std::vector<std::string>& paths) {
    std::vector<std::vector<std::uint8_t>> files;
    std::size_t n = 0;
    for (const auto& path : paths) {
      if (!std::filesystem::exists(path))
        throw data_error("loom::data: " + path + " does not exist (CIFAR-10 binary version: unpack "
                         "cifar-10-binary.tar.gz and pass the cifar-10-batches-bin folder)");
      std::ifstream f(path, std::ios::binary);
      std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      if (!f.good() && !f.eof()) throw data_error("loom::data: cannot read " + path);
      if (bytes.empty() || bytes.size() % record != 0)
        throw data_error("loom::data: " + path + " is truncated or corrupt: " + std::to_string(bytes.size()) +
                         " bytes is not a whole number of " + std::to_string(record) + "-byte CIFAR-10 records");
      for (std::size_t r = 0; r < bytes.size() / record; ++r)
        if (bytes[r * record] >= classes)
          throw data_error("loom::data: " + path + " is corrupt: record " + std::to_string(r) + " has label " +
                           std::to_string(bytes[r * record]) + " outside [0, 10)");
      n += bytes.size() / record;
      files.push_back(std::move(bytes));
    }
    ImageDataset ds{Images({n, channels, height, width}), Labels({n})};
    float* x = ds.images.data();
    std::size_t i = 0;
    for (const auto& bytes : files)
      for (std::size_t r = 0; r < bytes.size() / record; ++r, ++i) {
        ds.labels.data()[i] = bytes[r * record];
        for (std::size_t k = 1; k < record; ++k) *x++ = float(bytes[r * record + k]) / 255.0f;
      }
    return ds;
  }
  /// The five training batches (50,000 images).
  static ImageDataset train(const std::string& dir = default_dir) {
    std::vector<std::string> p;
    for (int b = 1; b <= 5; ++b) p.push_back(dir + "/data_batch_" + std::to_string(b) + ".bin");
    return read(p);
  }
  /// The test batch (10,000 images).
  static ImageDataset test(const std::string& dir = default_dir) { return read({dir + "/test_batch.bin"}); }
  /// Per-channel mean and standard deviation of the training set (for Normalize).
  static constexpr float mean[3] = {0.4914f, 0.4822f, 0.4465f};
  static constexpr float stddev[3] = {0.2470f, 0.2435f, 0.2616f};
};

}  // namespace loom::data

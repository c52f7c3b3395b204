// loom/data/idx.hpp — the IDX format of the MNIST family (optionally gzip-compressed, through zlib),
// and the Fashion-MNIST / MNIST datasets. Bad files throw with the path and what was wrong.
#pragma once
#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "../core/tensor.hpp"

namespace loom::data {

struct data_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// An IDX file: element type code, extents, raw bytes (uint8 data only, as the MNIST family uses).
struct IdxFile {
  std::vector<std::size_t> dims;
  std::vector<std::uint8_t> bytes;
};

/// Reads an IDX file (gzip or plain). `package` names the Debian package that ships it, for the message
/// when the file is missing.
inline IdxFile read_idx(const std::string& path, const std::string& package = "") {
  if (!std::filesystem::exists(path))
    throw data_error("loom::data: " + path + " does not exist" +
                     (package.empty() ? "" : " (install it with: apt-get install " + package + ")"));
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw data_error("loom::data: cannot open " + path);
  auto read = [&](void* dst, std::size_t n, const char* what) {
    const int got = gzread(f, dst, static_cast<unsigned>(n));
    if (got < 0 || static_cast<std::size_t>(got) != n) {
      gzclose(f);
      throw data_error("loom::data: " + path + " is truncated or corrupt (reading " + what + ": wanted " +
                       std::to_string(n) + " bytes, got " + std::to_string(got < 0 ? 0 : got) + ")");
    }
  };
  std::uint8_t magic[4];
  read(magic, 4, "the magic number");
  if (magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || magic[3] == 0 || magic[3] > 4) {
    gzclose(f);
    throw data_error("loom::data: " + path + " is not an IDX file of unsigned bytes (magic " +
                     std::to_string(magic[0]) + " " + std::to_string(magic[1]) + " " + std::to_string(magic[2]) +
                     " " + std::to_string(magic[3]) + ")");
  }
  IdxFile out;
  std::size_t n = 1;
  for (int i = 0; i < magic[3]; ++i) {
    std::uint8_t b[4];
    read(b, 4, "the extents");
    const std::size_t d = (std::size_t(b[0]) << 24) | (std::size_t(b[1]) << 16) | (std::size_t(b[2]) << 8) | b[3];
    out.dims.push_back(d);
    n *= d;
  }
  if (n > (std::size_t{1} << 34)) {
    gzclose(f);
    throw data_error("loom::data: " + path + " declares an implausible size");
  }
  out.bytes.resize(n);
  if (n) read(out.bytes.data(), n, "the data");
  gzclose(f);
  return out;
}

/// An in-memory dataset of float samples x [N, ...] (rank R, the sample axis first) and integer labels [N].
template <std::size_t R>
struct TensorDataset {
  static_assert(R >= 2, "loom::data::TensorDataset: x needs a sample axis and at least one more");
  Tensor<float, DynShape<R>> images;  ///< the samples (images [N, C, H, W] for R = 4)
  Tensor<std::int64_t, Shape<dyn>> labels;
  TensorDataset() = default;
  TensorDataset(Tensor<float, DynShape<R>> x, Tensor<std::int64_t, Shape<dyn>> y) : images(std::move(x)), labels(std::move(y)) {
    if (images.dims()[0] != labels.size())
      throw shape_error("loom::data::TensorDataset: samples " + to_string(images.dims()) + " and labels " +
                        to_string(labels.dims()) + " disagree on the sample count");
  }
  std::size_t size() const { return labels.size(); }
  std::size_t sample_size() const { return size() ? images.size() / size() : 0; }
};
/// Images [N, C, H, W] (float, usually scaled to [0, 1]) and labels [N].
using ImageDataset = TensorDataset<4>;
using Images = Tensor<float, DynShape<4>>;
using Labels = Tensor<std::int64_t, Shape<dyn>>;

/// x <- (x - mean) / std for every pixel (Fashion-MNIST: mean 0.2860, std 0.3530).
inline void normalize(ImageDataset& ds, float mean, float stddev) {
  ds.images.for_each([&](float& v) { v = (v - mean) / stddev; });
}

inline ImageDataset load_idx_pair(const std::string& images_path, const std::string& labels_path,
                                  const std::string& package = "") {
  const auto im = read_idx(images_path, package);
  const auto lb = read_idx(labels_path, package);
  if (im.dims.size() != 3) throw data_error("loom::data: " + images_path + " is not a 3-D image file");
  if (lb.dims.size() != 1) throw data_error("loom::data: " + labels_path + " is not a 1-D label file");
  if (im.dims[0] != lb.dims[0])
    throw data_error("loom::data: " + images_path + " holds " + std::to_string(im.dims[0]) + " images but " +
                     labels_path + " holds " + std::to_string(lb.dims[0]) + " labels");
  ImageDataset ds{Images({im.dims[0], 1, im.dims[1], im.dims[2]}), Labels({lb.dims[0]})};
  for (std::size_t i = 0; i < im.bytes.size(); ++i) ds.images.data()[i] = float(im.bytes[i]) / 255.0f;
  for (std::size_t i = 0; i < lb.bytes.size(); ++i) ds.labels.data()[i] = lb.bytes[i];
  return ds;
}

/// Fashion-MNIST from Debian's dataset-fashion-mnist (or any folder with the four IDX files).
struct FashionMNIST {
  static constexpr const char* default_dir = "/usr/share/datasets/fashion-mnist";
  static ImageDataset train(const std::string& dir = default_dir) {
    return load_idx_pair(dir + "/train-images-idx3-ubyte.gz", dir + "/train-labels-idx1-ubyte.gz", "dataset-fashion-mnist");
  }
  static ImageDataset test(const std::string& dir = default_dir) {
    return load_idx_pair(dir + "/t10k-images-idx3-ubyte.gz", dir + "/t10k-labels-idx1-ubyte.gz", "dataset-fashion-mnist");
  }
};

/// MNIST (the same four IDX file names; Debian ships no MNIST package, so the folder is the caller's).
struct MNIST {
  static ImageDataset train(const std::string& dir) {
    return load_idx_pair(dir + "/train-images-idx3-ubyte.gz", dir + "/train-labels-idx1-ubyte.gz");
  }
  static ImageDataset test(const std::string& dir) {
    return load_idx_pair(dir + "/t10k-images-idx3-ubyte.gz", dir + "/t10k-labels-idx1-ubyte.gz");
  }
};

}  // namespace loom::data

// loom/data/loader.hpp — batches from an in-memory image dataset: seeded shuffle per epoch, drop_last,
// batch tensors that reuse two fixed buffers (no allocation per batch).
#pragma once
#include <numeric>

#include "idx.hpp"

namespace loom::data {

struct LoaderOptions {
  std::size_t batch = 64;
  bool shuffle = true;
  bool drop_last = false;
  std::uint64_t seed = 0;
};

struct Batch {
  Tensor<float, Shape<dyn, 1, dyn, dyn>> x;
  Tensor<std::int64_t, Shape<dyn>> y;
};

class DataLoader {
 public:
  DataLoader(const ImageDataset& ds, LoaderOptions o) : ds_(&ds), o_(o), order_(ds.size()) {
    if (o.batch == 0) throw std::invalid_argument("loom::data::DataLoader: batch size must be positive");
    const auto& d = ds.images.dims();
    xbuf_ = Tensor<float, Shape<dyn, 1, dyn, dyn>>({o.batch, 1, d[2], d[3]});
    ybuf_ = Tensor<std::int64_t, Shape<dyn>>({o.batch});
    std::iota(order_.begin(), order_.end(), std::size_t{0});
  }
  /// Batches per epoch.
  std::size_t size() const { return o_.drop_last ? ds_->size() / o_.batch : (ds_->size() + o_.batch - 1) / o_.batch; }

  class iterator {
   public:
    iterator(DataLoader* l, std::size_t i) : l_(l), i_(i) {}
    const Batch& operator*() { return l_->fill(i_); }
    iterator& operator++() { ++i_; return *this; }
    bool operator!=(const iterator& o) const { return i_ != o.i_; }

   private:
    DataLoader* l_;
    std::size_t i_;
  };
  /// Starts an epoch (reshuffling with seed + epoch when shuffling).
  iterator begin() {
    if (o_.shuffle) {
      Generator g(o_.seed + epoch_);
      for (std::size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[g.below(i)]);
    }
    ++epoch_;
    return {this, 0};
  }
  iterator end() { return {this, size()}; }

 private:
  const Batch& fill(std::size_t b) {
    const std::size_t start = b * o_.batch, n = std::min(o_.batch, ds_->size() - start);
    const std::size_t per = ds_->images.size() / std::max<std::size_t>(1, ds_->size());
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t src = order_[start + k];
      std::copy_n(ds_->images.data() + src * per, per, xbuf_.data() + k * per);
      ybuf_.data()[k] = ds_->labels.data()[src];
    }
    const auto& d = xbuf_.dims();
    current_.x = Tensor<float, Shape<dyn, 1, dyn, dyn>>::wrap(xbuf_.data(), {n, 1, d[2], d[3]});
    current_.y = Tensor<std::int64_t, Shape<dyn>>::wrap(ybuf_.data(), {n});
    return current_;
  }

  const ImageDataset* ds_;
  LoaderOptions o_;
  std::vector<std::size_t> order_;
  Tensor<float, Shape<dyn, 1, dyn, dyn>> xbuf_;
  Tensor<std::int64_t, Shape<dyn>> ybuf_;
  Batch current_;
  std::uint64_t epoch_ = 0;
};

}  // namespace loom::data

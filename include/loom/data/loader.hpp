// loom/data/loader.hpp — batches from an in-memory image dataset: seeded shuffle per epoch, drop_last,
// per-sample transforms, and a background thread that prepares the next batch while the caller trains
// on the current one. Batches live in two fixed buffers (no allocation per batch); a batch stays valid
// until the one after it is fetched.
#pragma once
#include <condition_variable>
#include <exception>
#include <mutex>
#include <numeric>
#include <thread>

#include "idx.hpp"
#include "transforms.hpp"

namespace loom::data {

struct LoaderOptions {
  std::size_t batch = 64;
  bool shuffle = true;
  bool drop_last = false;
  std::uint64_t seed = 0;
  /// Prepare batch i + 1 on a background thread while batch i is in use.
  bool prefetch = true;
  /// Applied to every sample, in order, as it is copied into the batch.
  std::vector<Transform> transforms = {};
};

template <std::size_t R>
struct Batch {
  Tensor<float, DynShape<R>> x;
  Labels y;
};

/// Loads batches of a TensorDataset<R>; transforms see each sample as [C, H, W] with the trailing axes
/// of a lower-rank sample set to 1 ([F] -> C = 1, H = 1, W = F).
template <std::size_t R>
class Loader {
  static constexpr std::size_t none = static_cast<std::size_t>(-1);

 public:
  using Samples = Tensor<float, DynShape<R>>;
  Loader(const TensorDataset<R>& ds, LoaderOptions o) : ds_(&ds), o_(std::move(o)), order_(ds.size()) {
    if (o_.batch == 0) throw std::invalid_argument("loom::data::DataLoader: batch size must be positive");
    auto d = ds.images.dims();
    d[0] = o_.batch;
    for (auto& s : slots_) s.x = Samples(d), s.y = Labels({o_.batch});
    scratch_.resize(ds.sample_size());
    std::iota(order_.begin(), order_.end(), std::size_t{0});
  }
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;
  ~Loader() {
    if (!worker_.joinable()) return;
    {
      std::lock_guard lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }

  /// Batches per epoch.
  std::size_t size() const { return o_.drop_last ? ds_->size() / o_.batch : (ds_->size() + o_.batch - 1) / o_.batch; }

  class iterator {
   public:
    iterator(Loader* l, std::size_t i) : l_(l), i_(i) {}
    const Batch<R>& operator*() { return l_->get(i_); }
    iterator& operator++() { ++i_; return *this; }
    bool operator!=(const iterator& o) const { return i_ != o.i_; }

   private:
    Loader* l_;
    std::size_t i_;
  };
  /// Starts an epoch (reshuffling with seed + epoch when shuffling) and, when prefetching, starts
  /// preparing its first batch.
  iterator begin() {
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return want_ == none; });  // the worker may still be filling the last epoch's batch
    if (o_.shuffle) {
      Generator g(o_.seed + epoch_);
      for (std::size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[g.below(i)]);
    }
    current_epoch_ = epoch_++;
    for (auto& s : slots_) s.filled = none;
    if (o_.prefetch && size() > 0) request(0, lock);
    return {this, 0};
  }
  iterator end() { return {this, size()}; }

 private:
  struct Slot {
    Samples x;
    Labels y;
    Batch<R> view;
    std::size_t filled = none;
  };

  const Batch<R>& get(std::size_t b) {
    Slot& s = slots_[b % 2];
    if (!o_.prefetch) {
      if (s.filled != b) fill(b, s), s.filled = b;
      return s.view;
    }
    std::unique_lock lock(m_);
    if (s.filled != b && want_ != b) {  // not requested yet (e.g. batches fetched out of order)
      cv_.wait(lock, [&] { return want_ == none; });
      request(b, lock);
    }
    cv_.wait(lock, [&] { return s.filled == b || error_; });
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    if (b + 1 < size() && slots_[(b + 1) % 2].filled != b + 1 && want_ == none) request(b + 1, lock);
    return s.view;
  }
  void request(std::size_t b, std::unique_lock<std::mutex>&) {
    if (!worker_.joinable()) worker_ = std::thread([this] { work(); });
    want_ = b;
    cv_.notify_all();
  }
  void work() {
    std::unique_lock lock(m_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || want_ != none; });
      if (stop_) return;
      const std::size_t b = want_;
      lock.unlock();
      std::exception_ptr err;
      try {
        fill(b, slots_[b % 2]);
      } catch (...) {
        err = std::current_exception();
      }
      lock.lock();
      if (err) error_ = err;
      else slots_[b % 2].filled = b;
      want_ = none;
      cv_.notify_all();
    }
  }
  /// Copies batch b's samples into slot s, applying the transforms.
  void fill(std::size_t b, Slot& s) {
    const std::size_t start = b * o_.batch, n = std::min(o_.batch, ds_->size() - start);
    const std::size_t per = ds_->sample_size();
    const auto& d = ds_->images.dims();
    // the sample as [C, H, W] for the transforms
    const std::size_t w = d[R - 1], h = R >= 3 ? d[R - 2] : 1, c = per / std::max<std::size_t>(w * h, 1);
    Generator rng;
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t src = order_[start + k];
      float* x = s.x.data() + k * per;
      std::copy_n(ds_->images.data() + src * per, per, x);
      if (!o_.transforms.empty()) {
        rng.reseed((o_.seed * 0x9E3779B97F4A7C15ull) ^ (current_epoch_ << 40) ^ src);
        Sample sample{x, scratch_.data(), c, h, w, rng};
        for (const auto& t : o_.transforms) t(sample);
      }
      s.y.data()[k] = ds_->labels.data()[src];
    }
    auto bd = d;
    bd[0] = n;
    s.view.x = Samples::wrap(s.x.data(), bd);
    s.view.y = Labels::wrap(s.y.data(), {n});
  }

  const TensorDataset<R>* ds_;
  LoaderOptions o_;
  std::vector<std::size_t> order_;
  std::vector<float> scratch_;
  Slot slots_[2];
  std::uint64_t epoch_ = 0, current_epoch_ = 0;
  std::mutex m_;
  std::condition_variable cv_;
  std::thread worker_;
  std::size_t want_ = none;
  bool stop_ = false;
  std::exception_ptr error_;
};

/// The image loader (batches [B, C, H, W]).
using DataLoader = Loader<4>;

}  // namespace loom::data

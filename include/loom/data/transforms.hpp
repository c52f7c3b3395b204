// loom/data/transforms.hpp — per-sample transforms a DataLoader applies while it assembles a batch:
// Normalize (per channel), RandomCrop (zero padding, then a random crop back to the original size),
// RandomHorizontalFlip. Random transforms draw from a generator seeded by (loader seed, epoch, sample),
// so a batch's content does not depend on which thread prepared it.
#pragma once
#include <algorithm>
#include <functional>
#include <stdexcept>
#include <vector>

#include "../core/random.hpp"

namespace loom::data {

/// One sample being prepared: pixels [C, H, W] (contiguous, in the batch buffer), a scratch buffer of
/// the same size, and the sample's generator.
struct Sample {
  float* x;
  float* scratch;
  std::size_t c, h, w;
  Generator& rng;
};
using Transform = std::function<void(Sample&)>;

/// x[c] <- (x[c] - mean[c]) / stddev[c]; one value serves every channel.
struct Normalize {
  std::vector<float> mean, stddev;
  void operator()(Sample& s) const {
    if ((mean.size() != 1 && mean.size() != s.c) || mean.size() != stddev.size())
      throw std::invalid_argument("loom::data::Normalize: " + std::to_string(mean.size()) + " means and " +
                                  std::to_string(stddev.size()) + " deviations for " + std::to_string(s.c) + " channels");
    const std::size_t plane = s.h * s.w;
    for (std::size_t c = 0; c < s.c; ++c) {
      const float m = mean[mean.size() == 1 ? 0 : c], inv = 1.0f / stddev[stddev.size() == 1 ? 0 : c];
      for (float* p = s.x + c * plane; p != s.x + (c + 1) * plane; ++p) *p = (*p - m) * inv;
    }
  }
};

/// Pads every side with `padding` zeros and crops an H x W window at a uniformly random offset
/// (torchvision's RandomCrop(size, padding) with size = the input size).
struct RandomCrop {
  std::size_t padding = 4;
  void operator()(Sample& s) const {
    const auto p = static_cast<std::ptrdiff_t>(padding);
    const std::ptrdiff_t dy = static_cast<std::ptrdiff_t>(s.rng.below(2 * padding + 1)) - p;
    const std::ptrdiff_t dx = static_cast<std::ptrdiff_t>(s.rng.below(2 * padding + 1)) - p;
    const auto H = static_cast<std::ptrdiff_t>(s.h), W = static_cast<std::ptrdiff_t>(s.w);
    std::copy_n(s.x, s.c * s.h * s.w, s.scratch);
    for (std::size_t c = 0; c < s.c; ++c)
      for (std::ptrdiff_t i = 0; i < H; ++i)
        for (std::ptrdiff_t j = 0; j < W; ++j) {
          const std::ptrdiff_t si = i + dy, sj = j + dx;
          s.x[(static_cast<std::ptrdiff_t>(c) * H + i) * W + j] =
              (si < 0 || si >= H || sj < 0 || sj >= W) ? 0.0f : s.scratch[(static_cast<std::ptrdiff_t>(c) * H + si) * W + sj];
        }
  }
};

/// Mirrors the sample left-right with probability p.
struct RandomHorizontalFlip {
  double p = 0.5;
  void operator()(Sample& s) const {
    if (s.rng.uniform() >= p) return;
    for (std::size_t r = 0; r < s.c * s.h; ++r) std::reverse(s.x + r * s.w, s.x + (r + 1) * s.w);
  }
};

}  // namespace loom::data

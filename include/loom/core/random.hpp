// loom/core/random.hpp — a seedable generator whose streams are the same on every platform.
#pragma once
#include <cmath>
#include <cstdint>
#include <numbers>

#include "device.hpp"

namespace loom {

/// splitmix64-seeded xoshiro256**: fast, reproducible, and independent of the standard library's
/// distribution implementations (which differ between vendors).
class Generator {
 public:
  explicit Generator(std::uint64_t seed = 0) { reseed(seed); }
  void reseed(std::uint64_t seed) {
    for (auto& w : s_) {
      seed += 0x9E3779B97F4A7C15ull;
      std::uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      w = z ^ (z >> 31);
    }
    has_spare_ = false;
  }
  std::uint64_t next() {
    const std::uint64_t r = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
    s_[2] ^= s_[0]; s_[3] ^= s_[1]; s_[1] ^= s_[2]; s_[0] ^= s_[3];
    s_[2] ^= t; s_[3] = rotl(s_[3], 45);
    return r;
  }
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  /// Standard normal (Box–Muller, the spare value is kept).
  double normal() {
    if (has_spare_) { has_spare_ = false; return spare_; }
    double u1 = 0;
    while (u1 <= 0) u1 = uniform();
    const double u2 = uniform(), r = std::sqrt(-2.0 * std::log(u1)), a = 2 * std::numbers::pi * u2;
    spare_ = r * std::sin(a); has_spare_ = true;
    return r * std::cos(a);
  }
  /// Uniform integer in [0, n).
  std::uint64_t below(std::uint64_t n) { return n ? next() % n : 0; }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4]{};
  double spare_ = 0;
  bool has_spare_ = false;
};

/// Uniform in [0, 1) from one 64-bit counter (a splitmix64 finalizer): a random stream that any thread
/// of any device can index directly, so a mask is regenerated in the backward instead of stored, and
/// the host and the device draw the same one (dropout, attention dropout).
LOOM_HOST_DEVICE inline double hash_uniform(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return static_cast<double>((x ^ (x >> 31)) >> 11) * 0x1.0p-53;
}

}  // namespace loom

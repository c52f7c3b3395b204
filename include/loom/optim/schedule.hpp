// loom/optim/schedule.hpp — learning-rate schedules as plain functions of the step.
#pragma once
#include <cmath>
#include <cstddef>
#include <numbers>

namespace loom::optim {

/// Linear warmup over `warmup` steps, then cosine decay from `base` to `floor` at step `total`.
inline double cosine_lr(double base, std::size_t step, std::size_t total, std::size_t warmup = 0, double floor = 0) {
  if (warmup && step < warmup) return base * double(step + 1) / double(warmup);
  const double t = total > warmup ? double(step - warmup) / double(total - warmup) : 1.0;
  return floor + (base - floor) * 0.5 * (1 + std::cos(std::numbers::pi * std::min(1.0, t)));
}
/// base * gamma^(step / every).
inline double step_lr(double base, std::size_t step, std::size_t every, double gamma) {
  return base * std::pow(gamma, double(step / (every ? every : 1)));
}

}  // namespace loom::optim

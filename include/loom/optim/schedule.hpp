// loom/optim/schedule.hpp — learning-rate schedules as plain functions of the step.
#pragma once
#include <cmath>
#include <cstddef>
#include <numbers>

namespace loom::optim {

/// Linear warmup over `warmup` steps from base * warmup_start up to base, then cosine decay from `base`
/// to `floor` at step `total` (and `floor` after it). Equals PyTorch's SequentialLR of
/// LinearLR(start_factor = warmup_start, total_iters = warmup) and CosineAnnealingLR(T_max = total - warmup,
/// eta_min = floor) with milestones = [warmup], stepped once per step.
inline double cosine_lr(double base, std::size_t step, std::size_t total, std::size_t warmup = 0, double floor = 0,
                        double warmup_start = 1.0 / 3) {
  if (warmup && step < warmup) return base * (warmup_start + (1 - warmup_start) * double(step) / double(warmup));
  const double t = total > warmup ? double(step - warmup) / double(total - warmup) : 1.0;
  return floor + (base - floor) * 0.5 * (1 + std::cos(std::numbers::pi * std::min(1.0, t)));
}
/// base * gamma^(step / every) (PyTorch's StepLR(step_size = every, gamma)).
inline double step_lr(double base, std::size_t step, std::size_t every, double gamma) {
  return base * std::pow(gamma, double(step / (every ? every : 1)));
}

}  // namespace loom::optim

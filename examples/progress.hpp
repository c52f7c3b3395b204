// examples/progress.hpp — the progress bar both training examples print (batches/s and running loss).
#pragma once
#include <chrono>
#include <cstdio>
#include <string>

using Clock = std::chrono::steady_clock;

/// Redraws "epoch E [=====     ] n/steps  r batch/s  loss L" on the current line.
inline void progress(int epoch, std::size_t n, std::size_t steps, Clock::time_point t0, double loss) {
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const int width = 30, done = int(width * n / steps);
  std::printf("\repoch %d [%s%s] %zu/%zu  %.1f batch/s  loss %.4f", epoch, std::string(done, '=').c_str(),
              std::string(width - done, ' ').c_str(), n, steps, double(n) / secs, loss);
  std::fflush(stdout);
}

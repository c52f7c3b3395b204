// loom/core/error.hpp — the exceptions loom throws for bad run-time input.
#pragma once
#include <stdexcept>
#include <string>

namespace loom {

/// A run-time extent disagrees with what an op needs; the message names both shapes.
struct shape_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

/// A value (loss, gradient) is not finite where the caller asked loom to check.
struct numeric_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace loom

namespace loom {

/// A CUDA runtime or cuBLAS call failed; the message names the call, where it was made and the error.
struct cuda_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace loom

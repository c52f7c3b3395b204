// loom/core/device.hpp — devices are types; an expression's device is part of its type.
#pragma once
#include <concepts>
#include <string_view>

// Marks functions that run on both the host and the device (the scalar math of elementwise ops, the
// device evaluator). Under nvcc it is `__host__ __device__`; with Thrust's OMP/CPP device systems
// (how CI tests the device path without a GPU) device code is host code and it expands to nothing.
#if defined(__CUDACC__)
#define LOOM_HOST_DEVICE __host__ __device__
#else
#define LOOM_HOST_DEVICE
#endif

namespace loom {

struct cpu {
  static constexpr std::string_view name = "cpu";
};
struct cuda {
  static constexpr std::string_view name = "cuda";
};

template <class D>
concept Device = std::same_as<D, cpu> || std::same_as<D, cuda>;

/// Devices whose memory the host may read and write element by element.
template <class D>
concept HostDevice = std::same_as<D, cpu>;

namespace detail {
/// Memory operations of device D (allocation, fill, copies); loom::cpu's are in core/tensor.hpp, the
/// device backend (loom/backend/device/memory.hpp) defines loom::cuda's.
template <class D>
struct DeviceMemory;

template <class D>
constexpr bool device_enabled = requires { DeviceMemory<D>::enabled; };

/// The text of the static_assert a tensor on a device without its backend fails with.
#define LOOM_DEVICE_DISABLED_MESSAGE                                                                     \
  "loom: tensors on loom::cuda need the device backend: compile with nvcc, or define LOOM_ENABLE_DEVICE " \
  "(Thrust's OMP/CPP device system; CMake: link loom::device_host) before including <loom/loom.hpp>"
}  // namespace detail

}  // namespace loom

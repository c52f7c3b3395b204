// loom/core/device.hpp — devices are types; an expression's device is part of its type.
#pragma once
#include <concepts>
#include <string_view>

namespace loom {

struct cpu {
  static constexpr std::string_view name = "cpu";
};
struct cuda {
  static constexpr std::string_view name = "cuda";
};

template <class D>
concept Device = std::same_as<D, cpu> || std::same_as<D, cuda>;

}  // namespace loom

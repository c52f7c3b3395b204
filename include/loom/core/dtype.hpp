// loom/core/dtype.hpp — the element types loom stores.
#pragma once
#include <concepts>
#include <cstdint>
#include <string_view>

namespace loom {

template <class T>
concept Dtype = std::same_as<T, float> || std::same_as<T, double> || std::same_as<T, std::int32_t> ||
                std::same_as<T, std::int64_t>;

template <class T>
concept FloatDtype = std::same_as<T, float> || std::same_as<T, double>;

template <Dtype T>
constexpr std::string_view dtype_name() {
  if constexpr (std::same_as<T, float>) return "float32";
  else if constexpr (std::same_as<T, double>) return "float64";
  else if constexpr (std::same_as<T, std::int32_t>) return "int32";
  else return "int64";
}

}  // namespace loom

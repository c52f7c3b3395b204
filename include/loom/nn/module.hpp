// loom/nn/module.hpp — what every module shares: parameters visited by name, train/eval mode, the
// generator that initializes them.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "../expr/expr.hpp"

namespace loom::nn {

/// A type-erased handle on one parameter (what optimizers, checkpoints and all-reduce take); value and
/// grad point into device D's memory.
template <class T, class D = cpu>
struct ParamRef {
  std::string name;
  T* value;
  T* grad;
  std::size_t size;
  std::vector<std::size_t> dims;
};

/// Collects parameters of element type T on device D under dotted names ("0.weight", "fc.bias").
template <class T, class D = cpu>
struct ParamCollector {
  std::vector<ParamRef<T, D>> out;
  template <class U, class S, class PD>
  void operator()(const std::string& name, const Param<U, S, PD>& p) {
    if constexpr (std::is_same_v<U, T> && std::is_same_v<PD, D>) {
      std::vector<std::size_t> d(p.value().dims().begin(), p.value().dims().end());
      out.push_back({name, p.value().data(), p.grad().data(), p.value().size(), d});
    }
  }
};

/// Modules expose visit(f, prefix) calling f(name, param) for each parameter they own.
template <class M>
concept Module = requires(const M& m) { M::num_params; };

/// All parameters of a module with element type T on device D, in declaration order.
template <class T = float, class D = cpu, Module M>
std::vector<ParamRef<T, D>> parameters(const M& m) {
  ParamCollector<T, D> c;
  m.visit(c, "");
  return c.out;
}

/// Sets every parameter's gradient to zero.
template <Module M>
void zero_grad(const M& m) {
  m.visit([](const std::string&, const auto& p) { p.zero_grad(); }, "");
}

/// Training mode flag shared by modules that behave differently in eval (dropout, batch norm).
struct Mode {
  bool training = true;
};

}  // namespace loom::nn

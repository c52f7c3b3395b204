// loom/optim/optimizer.hpp — SGD (momentum, Nesterov, weight decay), Adam, AdamW, RMSprop. Each update
// is one functor over a parameter's value, gradient and state: a loop on the host, one fused kernel for
// up to 32 parameters on a device. State lives beside the parameters and is allocated once, at construction.
// The update rules are PyTorch's (torch.optim.SGD / Adam / AdamW, default arguments).
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <vector>

#include "../backend/exec.hpp"
#include "../core/tensor.hpp"
#include "../nn/module.hpp"

namespace loom::optim {

struct SGDOptions {
  double lr = 0.01, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
};
struct AdamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
};

/// What all optimizers share: the parameters (on device D), their state buffers and zero_grad().
template <class T, class D = cpu>
class Optimizer {
 public:
  using device_type = D;
  /// One state tensor per parameter (momentum, moments), in the parameter's memory.
  using Buffer = Tensor<T, Shape<dyn>, D>;
  explicit Optimizer(std::vector<nn::ParamRef<T, D>> params) : params_(std::move(params)) {}
  void zero_grad();
  const std::vector<nn::ParamRef<T, D>>& params() const { return params_; }

 protected:
  std::vector<Buffer> state(std::size_t copies_per_param) const {
    std::vector<Buffer> s;
    for (const auto& p : params_)
      for (std::size_t k = 0; k < copies_per_param; ++k) s.emplace_back(Dims<1>{p.size});
    return s;
  }
  std::vector<nn::ParamRef<T, D>> params_;
};

namespace detail {
/// The update functors: one element of one parameter per call; with Clear, the gradient element is
/// zeroed once read (step_and_zero_grad: the clearing rides along the update's pass). On the host,
/// backend::each runs block(k0, n) where there is one: the same update over [k0, k0 + n) as Eigen array
/// expressions — vectorized, where the compiler leaves the per-element loop scalar (std::sqrt may set
/// errno), the block in L1 across its passes. (SGD's loop vectorizes as it is, and ran faster than its
/// block form: 53 vs 73 ns at 1000 elements.)
template <class T>
using HostSpan = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T, bool Clear>
struct SGDUpdate {
  static constexpr std::size_t streams = 3;
  T *value, *buf, *grad;
  T lr, mu, damp, wd;
  bool first, nesterov;
  LOOM_HOST_DEVICE void bind(T* const* p) { value = p[0], buf = p[1], grad = p[2]; }
  LOOM_HOST_DEVICE void operator()(std::size_t k) const {
    T d = grad[k] + wd * value[k];
    if constexpr (Clear) grad[k] = T{0};
    if (mu != 0) {
      buf[k] = first ? d : mu * buf[k] + (1 - damp) * d;
      d = nesterov ? d + mu * buf[k] : buf[k];
    }
    value[k] -= lr * d;
  }
};
template <class T, bool Decoupled, bool Clear>
struct AdamUpdate {
  static constexpr std::size_t streams = 4;
  T *value, *m, *v, *grad;
  T lr, b1, b2, eps, wd, step_size, sbc2;
  LOOM_HOST_DEVICE void bind(T* const* p) { value = p[0], m = p[1], v = p[2], grad = p[3]; }
  LOOM_HOST_DEVICE void operator()(std::size_t k) const {
    T g = grad[k];
    if constexpr (Clear) grad[k] = T{0};
    if constexpr (Decoupled) value[k] *= 1 - lr * wd;
    else g += wd * value[k];
    m[k] = b1 * m[k] + (1 - b1) * g;
    v[k] = b2 * v[k] + (1 - b2) * g * g;
    value[k] -= step_size * m[k] / (std::sqrt(v[k]) / sbc2 + eps);
  }
  void block(std::size_t k0, std::size_t n) const {
    HostSpan<T> val(value + k0, n), mm(m + k0, n), vv(v + k0, n), g(grad + k0, n);
    if constexpr (Decoupled) {
      val *= 1 - lr * wd;
      mm = b1 * mm + (1 - b1) * g;
      vv = b2 * vv + (1 - b2) * g * g;
    } else {
      const auto gd = g + wd * val;
      mm = b1 * mm + (1 - b1) * gd;
      vv = b2 * vv + (1 - b2) * gd * gd;
    }
    val -= step_size * mm / (vv.sqrt() / sbc2 + eps);
    if constexpr (Clear) g.setZero();
  }
};
template <class T, bool Clear>
struct RMSpropUpdate {
  static constexpr std::size_t streams = 4;
  T *value, *sq, *buf, *grad;
  T lr, a, eps, wd, mu;
  LOOM_HOST_DEVICE void bind(T* const* p) { value = p[0], sq = p[1], buf = p[2], grad = p[3]; }
  LOOM_HOST_DEVICE void operator()(std::size_t k) const {
    const T g = grad[k] + wd * value[k];
    if constexpr (Clear) grad[k] = T{0};
    sq[k] = a * sq[k] + (1 - a) * g * g;
    const T d = g / (std::sqrt(sq[k]) + eps);
    if (mu != 0) {
      buf[k] = mu * buf[k] + d;
      value[k] -= lr * buf[k];
    } else {
      value[k] -= lr * d;
    }
  }
  void block(std::size_t k0, std::size_t n) const {
    HostSpan<T> val(value + k0, n), s(sq + k0, n), g(grad + k0, n);
    const auto gd = g + wd * val;
    s = a * s + (1 - a) * gd * gd;
    const auto d = gd / (s.sqrt() + eps);
    if (mu != 0) {
      HostSpan<T> b(buf + k0, n);
      b = mu * b + d;
      val -= lr * b;
    } else {
      val -= lr * d;
    }
    if constexpr (Clear) g.setZero();
  }
};

/// Up to `max` parameters' pointers (K each) and the running ends of their element ranges: one device
/// launch covers them all (a model's step was a launch per parameter, most too small to fill a GPU).
template <class T, std::size_t K>
struct Slices {
  static constexpr std::size_t max = 32;
  std::size_t n = 0, end[max]{};
  T* ptr[max][K]{};
  /// The slice element k of the whole range falls in (the first whose end exceeds it: a binary search);
  /// k becomes the offset in that slice.
  LOOM_HOST_DEVICE std::size_t find(std::size_t& k) const {
    std::size_t lo = 0, hi = n - 1;
    while (lo < hi) {
      const std::size_t mid = (lo + hi) / 2;
      if (k < end[mid]) hi = mid;
      else lo = mid + 1;
    }
    if (lo) k -= end[lo - 1];
    return lo;
  }
};
/// Calls f(slices, elements) for each run of up to Slices::max non-empty parameters, ptrs(i) giving
/// parameter i's K pointers (a std::array).
template <std::size_t K, class T, class D, class Ptrs, class F>
void in_slices(const std::vector<nn::ParamRef<T, D>>& params, Ptrs&& ptrs, F&& f) {
  Slices<T, K> s;
  std::size_t total = 0;
  auto flush = [&] {
    if (s.n) f(s, total);
    s.n = 0, total = 0;
  };
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (params[i].size == 0) continue;
    const std::array<T*, K> p = ptrs(i);
    std::copy(p.begin(), p.end(), s.ptr[s.n]);
    total += params[i].size;
    s.end[s.n++] = total;
    if (s.n == s.max) flush();
  }
  flush();
}
/// Update U over the elements of several parameters as one range, U taking each element's slice's pointers.
template <class T, class U>
struct MultiUpdate {
  U u;
  Slices<T, U::streams> s;
  LOOM_HOST_DEVICE void operator()(std::size_t k) const {
    U v = u;
    v.bind(s.ptr[s.find(k)]);
    v(k);
  }
};
/// Runs update u over every parameter, u taking ptrs(i)'s pointers (a std::array of U::streams) for
/// parameter i. Host: parameter by parameter (each vectorized by backend::each); device: one launch per
/// 32 parameters.
template <class D, class T, class U, class Ptrs>
void update_all(const std::vector<nn::ParamRef<T, D>>& params, const U& u, Ptrs&& ptrs) {
  if constexpr (HostDevice<D>) {
    for (std::size_t i = 0; i < params.size(); ++i) {
      U ui = u;
      ui.bind(ptrs(i).data());
      backend::each<D>(params[i].size, ui);
    }
  } else {
    in_slices<U::streams>(params, ptrs, [&](const Slices<T, U::streams>& s, std::size_t n) {
      backend::each<D>(n, MultiUpdate<T, U>{u, s});
    });
  }
}
/// Gradient updates of one stream: zeroing, scaling (clip_grad_norm).
template <class T>
struct ScaleBy {
  static constexpr std::size_t streams = 1;
  T* g;
  T s;
  LOOM_HOST_DEVICE void bind(T* const* p) { g = p[0]; }
  LOOM_HOST_DEVICE void operator()(std::size_t k) const { g[k] = s == T{0} ? T{0} : g[k] * s; }
};
/// The squares of a run of gradients (clip_grad_norm's sum, one reduction per run on a device).
template <class T>
struct SliceSquares {
  Slices<T, 1> s;
  LOOM_HOST_DEVICE double operator()(std::size_t k) const {
    const T v = s.ptr[s.find(k)][0][k];
    return double(v) * double(v);
  }
};
template <class D, class T>
auto grads_of(const std::vector<nn::ParamRef<T, D>>& params) {
  return [&params](std::size_t i) { return std::array<T*, 1>{params[i].grad}; };
}
}  // namespace detail

template <class T = float, class D = cpu>
class SGD : public Optimizer<T, D> {
 public:
  using Options = SGDOptions;
  using typename Optimizer<T, D>::Buffer;
  SGD(std::vector<nn::ParamRef<T, D>> params, Options o) : Optimizer<T, D>(std::move(params)), o_(o), buf_(this->state(1)) {}
  void step() { update<false>(); }
  /// step() then zero_grad() in one pass over each parameter (the update clears the gradient it read).
  void step_and_zero_grad() { update<true>(); }
  Options& options() { return o_; }
  /// Named state buffers (for checkpoints) and the step count.
  std::vector<std::pair<std::string, Buffer*>> state_buffers() {
    std::vector<std::pair<std::string, Buffer*>> r;
    for (std::size_t i = 0; i < this->params_.size(); ++i) r.emplace_back(this->params_[i].name + ".momentum_buffer", &buf_[i]);
    return r;
  }
  std::size_t& step_count() { return steps_; }

 private:
  template <bool Clear>
  void update() {
    const detail::SGDUpdate<T, Clear> u{nullptr, nullptr, nullptr, T(o_.lr), T(o_.momentum), T(o_.dampening),
                                        T(o_.weight_decay), steps_ == 0, o_.nesterov};
    detail::update_all(this->params_, u, [&](std::size_t i) {
      return std::array{this->params_[i].value, buf_[i].data(), this->params_[i].grad};
    });
    ++steps_;
  }
  Options o_;
  std::vector<Buffer> buf_;
  std::size_t steps_ = 0;
};

/// Adam (Decoupled = false: L2 penalty added to the gradient) or AdamW (Decoupled = true).
template <class T = float, bool Decoupled = false, class D = cpu>
class AdamBase : public Optimizer<T, D> {
 public:
  using Options = AdamOptions;
  using typename Optimizer<T, D>::Buffer;
  AdamBase(std::vector<nn::ParamRef<T, D>> params, Options o)
      : Optimizer<T, D>(std::move(params)), o_(o), m_(this->state(1)), v_(this->state(1)) {}
  void step() { update<false>(); }
  /// step() then zero_grad() in one pass over each parameter (the update clears the gradient it read).
  void step_and_zero_grad() { update<true>(); }
  Options& options() { return o_; }
  std::vector<std::pair<std::string, Buffer*>> state_buffers() {
    std::vector<std::pair<std::string, Buffer*>> r;
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      r.emplace_back(this->params_[i].name + ".exp_avg", &m_[i]);
      r.emplace_back(this->params_[i].name + ".exp_avg_sq", &v_[i]);
    }
    return r;
  }
  std::size_t& step_count() { return t_; }

 private:
  template <bool Clear>
  void update() {
    ++t_;
    const double bc1 = 1 - std::pow(o_.beta1, double(t_)), bc2 = 1 - std::pow(o_.beta2, double(t_));
    const detail::AdamUpdate<T, Decoupled, Clear> u{nullptr, nullptr, nullptr, nullptr, T(o_.lr), T(o_.beta1), T(o_.beta2),
                                                    T(o_.eps), T(o_.weight_decay), T(o_.lr / bc1), T(std::sqrt(bc2))};
    detail::update_all(this->params_, u, [&](std::size_t i) {
      return std::array{this->params_[i].value, m_[i].data(), v_[i].data(), this->params_[i].grad};
    });
  }
  Options o_;
  std::vector<Buffer> m_, v_;
  std::size_t t_ = 0;
};
template <class T = float, class D = cpu>
using Adam = AdamBase<T, false, D>;
/// AdamW's default weight decay is 0.01 (as PyTorch's).
template <class T = float, class D = cpu>
class AdamW : public AdamBase<T, true, D> {
 public:
  AdamW(std::vector<nn::ParamRef<T, D>> params, AdamOptions o = {.lr = 1e-3, .weight_decay = 0.01})
      : AdamBase<T, true, D>(std::move(params), o) {}
};

struct RMSpropOptions {
  double lr = 0.01, alpha = 0.99, eps = 1e-8, weight_decay = 0, momentum = 0;
};

/// RMSprop as torch.optim.RMSprop (non-centered).
template <class T = float, class D = cpu>
class RMSprop : public Optimizer<T, D> {
 public:
  using Options = RMSpropOptions;
  using typename Optimizer<T, D>::Buffer;
  RMSprop(std::vector<nn::ParamRef<T, D>> params, Options o)
      : Optimizer<T, D>(std::move(params)), o_(o), sq_(this->state(1)), buf_(this->state(1)) {}
  void step() { update<false>(); }
  /// step() then zero_grad() in one pass over each parameter (the update clears the gradient it read).
  void step_and_zero_grad() { update<true>(); }
  Options& options() { return o_; }
  std::vector<std::pair<std::string, Buffer*>> state_buffers() {
    std::vector<std::pair<std::string, Buffer*>> r;
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      r.emplace_back(this->params_[i].name + ".square_avg", &sq_[i]);
      r.emplace_back(this->params_[i].name + ".momentum_buffer", &buf_[i]);
    }
    return r;
  }
  std::size_t& step_count() { return steps_; }

 private:
  template <bool Clear>
  void update() {
    const detail::RMSpropUpdate<T, Clear> u{nullptr, nullptr, nullptr, nullptr, T(o_.lr), T(o_.alpha), T(o_.eps),
                                            T(o_.weight_decay), T(o_.momentum)};
    detail::update_all(this->params_, u, [&](std::size_t i) {
      return std::array{this->params_[i].value, sq_[i].data(), buf_[i].data(), this->params_[i].grad};
    });
    ++steps_;
  }
  Options o_;
  std::vector<Buffer> sq_, buf_;
  std::size_t steps_ = 0;
};

template <class T, class D>
void Optimizer<T, D>::zero_grad() {
  if constexpr (HostDevice<D>)
    for (auto& p : params_) loom::detail::DeviceMemory<D>::fill(p.grad, p.size, T{0});
  else
    detail::update_all(params_, detail::ScaleBy<T>{nullptr, T{0}}, detail::grads_of(params_));
}

/// Scales all gradients so that their global L2 norm is at most max_norm; returns the norm before. On a
/// device, one reduction (one wait for its result) per 32 parameters and one scaling launch.
template <class T, class D>
double clip_grad_norm(const std::vector<nn::ParamRef<T, D>>& params, double max_norm) {
  double sq = 0;
  if constexpr (HostDevice<D>) {
    for (const auto& p : params)
      for (std::size_t k = 0; k < p.size; ++k) sq += double(p.grad[k]) * double(p.grad[k]);
  } else {
    detail::in_slices<1>(params, detail::grads_of(params), [&](const detail::Slices<T, 1>& s, std::size_t n) {
      sq += backend::device::sum_n<double>(n, detail::SliceSquares<T>{s});
    });
  }
  const double norm = std::sqrt(sq);
  if (norm > max_norm && norm > 0)
    detail::update_all(params, detail::ScaleBy<T>{nullptr, T(max_norm / (norm + 1e-6))}, detail::grads_of(params));
  return norm;
}

}  // namespace loom::optim

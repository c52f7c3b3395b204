// loom/optim/optimizer.hpp — SGD (momentum, Nesterov, weight decay), Adam, AdamW. Each update is one
// loop per parameter over its value, gradient and state; state is allocated once, at construction.
// The update rules are PyTorch's (torch.optim.SGD / Adam / AdamW, default arguments).
#pragma once
#include <cmath>
#include <memory>
#include <vector>

#include "../nn/module.hpp"

namespace loom::optim {

struct SGDOptions {
  double lr = 0.01, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
};
struct AdamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
};

/// What all optimizers share: the parameters and zero_grad().
template <class T>
class Optimizer {
 public:
  explicit Optimizer(std::vector<nn::ParamRef<T>> params) : params_(std::move(params)) {}
  void zero_grad() {
    for (auto& p : params_) std::fill_n(p.grad, p.size, T{0});
  }
  const std::vector<nn::ParamRef<T>>& params() const { return params_; }

 protected:
  std::vector<std::vector<T>> state(std::size_t copies_per_param) const {
    std::vector<std::vector<T>> s;
    for (const auto& p : params_)
      for (std::size_t k = 0; k < copies_per_param; ++k) s.emplace_back(p.size, T{0});
    return s;
  }
  std::vector<nn::ParamRef<T>> params_;
};

template <class T = float>
class SGD : public Optimizer<T> {
 public:
  using Options = SGDOptions;
  SGD(std::vector<nn::ParamRef<T>> params, Options o) : Optimizer<T>(std::move(params)), o_(o), buf_(this->state(1)) {}
  void step() {
    const T lr = T(o_.lr), mu = T(o_.momentum), damp = T(o_.dampening), wd = T(o_.weight_decay);
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      auto& p = this->params_[i];
      T* b = buf_[i].data();
      for (std::size_t k = 0; k < p.size; ++k) {
        T d = p.grad[k] + wd * p.value[k];
        if (mu != 0) {
          b[k] = steps_ == 0 ? d : mu * b[k] + (1 - damp) * d;
          d = o_.nesterov ? d + mu * b[k] : b[k];
        }
        p.value[k] -= lr * d;
      }
    }
    ++steps_;
  }
  Options& options() { return o_; }
  /// Named state buffers (for checkpoints) and the step count.
  std::vector<std::pair<std::string, std::vector<T>*>> state_buffers() {
    std::vector<std::pair<std::string, std::vector<T>*>> r;
    for (std::size_t i = 0; i < this->params_.size(); ++i) r.emplace_back(this->params_[i].name + ".momentum_buffer", &buf_[i]);
    return r;
  }
  std::size_t& step_count() { return steps_; }

 private:
  Options o_;
  std::vector<std::vector<T>> buf_;
  std::size_t steps_ = 0;
};

/// Adam (Decoupled = false: L2 penalty added to the gradient) or AdamW (Decoupled = true).
template <class T = float, bool Decoupled = false>
class AdamBase : public Optimizer<T> {
 public:
  using Options = AdamOptions;
  AdamBase(std::vector<nn::ParamRef<T>> params, Options o) : Optimizer<T>(std::move(params)), o_(o), m_(this->state(1)), v_(this->state(1)) {}
  void step() {
    ++t_;
    const double bc1 = 1 - std::pow(o_.beta1, double(t_)), bc2 = 1 - std::pow(o_.beta2, double(t_));
    const T lr = T(o_.lr), b1 = T(o_.beta1), b2 = T(o_.beta2), eps = T(o_.eps), wd = T(o_.weight_decay);
    const T step_size = T(o_.lr / bc1), sbc2 = T(std::sqrt(bc2));
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      auto& p = this->params_[i];
      T *m = m_[i].data(), *v = v_[i].data();
      for (std::size_t k = 0; k < p.size; ++k) {
        T g = p.grad[k];
        if constexpr (Decoupled) p.value[k] *= 1 - lr * wd;
        else g += wd * p.value[k];
        m[k] = b1 * m[k] + (1 - b1) * g;
        v[k] = b2 * v[k] + (1 - b2) * g * g;
        p.value[k] -= step_size * m[k] / (std::sqrt(v[k]) / sbc2 + eps);
      }
    }
  }
  Options& options() { return o_; }
  std::vector<std::pair<std::string, std::vector<T>*>> state_buffers() {
    std::vector<std::pair<std::string, std::vector<T>*>> r;
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      r.emplace_back(this->params_[i].name + ".exp_avg", &m_[i]);
      r.emplace_back(this->params_[i].name + ".exp_avg_sq", &v_[i]);
    }
    return r;
  }
  std::size_t& step_count() { return t_; }

 private:
  Options o_;
  std::vector<std::vector<T>> m_, v_;
  std::size_t t_ = 0;
};
template <class T = float>
using Adam = AdamBase<T, false>;
/// AdamW's default weight decay is 0.01 (as PyTorch's).
template <class T = float>
class AdamW : public AdamBase<T, true> {
 public:
  AdamW(std::vector<nn::ParamRef<T>> params, AdamOptions o = {.lr = 1e-3, .weight_decay = 0.01})
      : AdamBase<T, true>(std::move(params), o) {}
};

struct RMSpropOptions {
  double lr = 0.01, alpha = 0.99, eps = 1e-8, weight_decay = 0, momentum = 0;
};

/// RMSprop as torch.optim.RMSprop (non-centered).
template <class T = float>
class RMSprop : public Optimizer<T> {
 public:
  using Options = RMSpropOptions;
  RMSprop(std::vector<nn::ParamRef<T>> params, Options o) : Optimizer<T>(std::move(params)), o_(o), sq_(this->state(1)), buf_(this->state(1)) {}
  void step() {
    const T lr = T(o_.lr), a = T(o_.alpha), eps = T(o_.eps), wd = T(o_.weight_decay), mu = T(o_.momentum);
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      auto& p = this->params_[i];
      T *sq = sq_[i].data(), *b = buf_[i].data();
      for (std::size_t k = 0; k < p.size; ++k) {
        const T g = p.grad[k] + wd * p.value[k];
        sq[k] = a * sq[k] + (1 - a) * g * g;
        const T d = g / (std::sqrt(sq[k]) + eps);
        if (mu != 0) {
          b[k] = mu * b[k] + d;
          p.value[k] -= lr * b[k];
        } else {
          p.value[k] -= lr * d;
        }
      }
    }
    ++steps_;
  }
  Options& options() { return o_; }
  std::vector<std::pair<std::string, std::vector<T>*>> state_buffers() {
    std::vector<std::pair<std::string, std::vector<T>*>> r;
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      r.emplace_back(this->params_[i].name + ".square_avg", &sq_[i]);
      r.emplace_back(this->params_[i].name + ".momentum_buffer", &buf_[i]);
    }
    return r;
  }
  std::size_t& step_count() { return steps_; }

 private:
  Options o_;
  std::vector<std::vector<T>> sq_, buf_;
  std::size_t steps_ = 0;
};

/// Scales all gradients so that their global L2 norm is at most max_norm; returns the norm before.
template <class T>
double clip_grad_norm(const std::vector<nn::ParamRef<T>>& params, double max_norm) {
  double sq = 0;
  for (const auto& p : params)
    for (std::size_t k = 0; k < p.size; ++k) sq += double(p.grad[k]) * double(p.grad[k]);
  const double norm = std::sqrt(sq);
  if (norm > max_norm && norm > 0) {
    const T scale = T(max_norm / (norm + 1e-6));
    for (const auto& p : params)
      for (std::size_t k = 0; k < p.size; ++k) p.grad[k] *= scale;
  }
  return norm;
}

}  // namespace loom::optim

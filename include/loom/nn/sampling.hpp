// loom/nn/sampling.hpp — choosing the next token from a row of logits: greedy (temperature 0),
// temperature sampling, and top-k, all from a seeded loom::Generator.
#pragma once
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../core/random.hpp"

namespace loom::nn {

struct SamplingOptions {
  double temperature = 1.0;  ///< 0: greedy (argmax)
  std::size_t top_k = 0;     ///< 0: every token is a candidate
};

/// An index drawn from softmax(logits / temperature) restricted to the top_k largest logits.
/// `scratch` is reused between calls (no allocation once it has grown to V).
template <class T>
std::size_t sample(const T* logits, std::size_t V, const SamplingOptions& o, Generator& g, std::vector<double>& scratch) {
  if (o.temperature <= 0 || o.top_k == 1) return static_cast<std::size_t>(std::max_element(logits, logits + V) - logits);
  scratch.assign(logits, logits + V);
  double cut = -std::numeric_limits<double>::infinity();
  if (o.top_k && o.top_k < V) {
    std::vector<double>& s = scratch;
    std::nth_element(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(o.top_k - 1), s.end(), std::greater<>());
    cut = s[o.top_k - 1];
    s.assign(logits, logits + V);
  }
  const double m = *std::max_element(scratch.begin(), scratch.end());
  double total = 0;
  for (auto& v : scratch) total += (v = v < cut ? 0.0 : std::exp((v - m) / o.temperature));
  double u = g.uniform() * total;
  for (std::size_t i = 0; i < V; ++i)
    if ((u -= scratch[i]) < 0) return i;
  for (std::size_t i = V; i-- > 0;)  // rounding: the last candidate
    if (scratch[i] > 0) return i;
  return 0;
}

}  // namespace loom::nn

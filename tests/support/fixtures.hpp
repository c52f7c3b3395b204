// tests/support/fixtures.hpp — reads the PyTorch fixture files (tests/fixtures/*.txt): cases of tagged
// flat float vectors, in file order.
#pragma once
#include <doctest/doctest.h>
#include <loom/loom.hpp>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace loom::testing {

using FixtureCase = std::vector<std::pair<std::string, std::vector<float>>>;

/// tests/fixtures, from the environment: ctest sets LOOM_FIXTURE_DIR (tests/CMakeLists.txt). Not a
/// compile-time path, so that the objects do not depend on where the tree is (ccache shares them
/// between clones).
inline std::string fixture_dir() {
  const char* d = std::getenv("LOOM_FIXTURE_DIR");
  REQUIRE_MESSAGE(d != nullptr, "LOOM_FIXTURE_DIR is not set: run the tests through ctest, or set it to tests/fixtures");
  return d;
}

inline std::map<std::string, FixtureCase> read_fixtures(const std::string& file) {
  std::map<std::string, FixtureCase> m;
  const std::string path = fixture_dir() + "/" + file;
  std::ifstream f(path);
  REQUIRE_MESSAGE(f.good(), "missing fixture file " << path);
  std::string line, name;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream is(line);
    std::string tag;
    is >> tag;
    if (tag == "case") {
      is >> name;
      continue;
    }
    std::size_t n = 0;
    is >> n;
    std::vector<float> v(n);
    for (auto& x : v) is >> x;
    m[name].emplace_back(tag, std::move(v));
  }
  return m;
}

/// All vectors of one tag in a case, in order.
inline std::vector<std::vector<float>> tagged(const FixtureCase& c, const std::string& tag) {
  std::vector<std::vector<float>> r;
  for (const auto& [t, v] : c)
    if (t == tag) r.push_back(v);
  return r;
}

inline void compare(const std::vector<float>& got, const std::vector<float>& want, const char* what,
                    float atol = 1e-5f, float rtol = 1e-4f) {
  REQUIRE_MESSAGE(got.size() == want.size(), what);
  for (std::size_t i = 0; i < got.size(); ++i)
    CHECK_MESSAGE(std::abs(got[i] - want[i]) <= atol + rtol * std::abs(want[i]),
                  what << "[" << i << "]: loom " << got[i] << " vs torch " << want[i]);
}

/// A file's cases, read once.
inline const std::map<std::string, FixtureCase>& fixtures(const std::string& file) {
  static std::map<std::string, std::map<std::string, FixtureCase>> cache;
  auto it = cache.find(file);
  if (it == cache.end()) it = cache.emplace(file, read_fixtures(file)).first;
  return it->second;
}

/// A float parameter of static shape S holding `v` (row-major).
template <class S>
Param<float, S> load_param(const std::vector<float>& v) {
  Param<float, S> p;
  REQUIRE(v.size() == p.value().size());
  std::copy(v.begin(), v.end(), p.value().data());
  return p;
}

/// Elements of a tensor in row-major order, as floats.
template <class T, class S>
std::vector<float> flat(const Tensor<T, S>& t) {
  std::vector<float> v;
  t.for_each([&](T& x) { v.push_back(static_cast<float>(x)); });
  return v;
}

/// The value y of a program that computes y * w (w a fixture's loss weights, row-major): fl(y w) / w is
/// y to an ulp or two. So one program checks a value and, by its backward, the gradients of
/// sum(y * w): not a value program and a loss program (the suite's build time is its programs).
template <class P>
std::vector<float> value_over(P& program, const std::vector<float>& w) {
  auto v = flat(program.forward().clone());
  REQUIRE(v.size() == w.size());
  for (std::size_t k = 0; k < v.size(); ++k) {
    REQUIRE(w[k] != 0.0f);
    v[k] /= w[k];
  }
  return v;
}

}  // namespace loom::testing

// loom/io/safetensors.hpp — checkpoints in the safetensors format (8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw little-endian data), so files
// loom writes are read by other tools and the other way round. Writes are atomic: a temporary file in
// the same folder, then rename, so a crash mid-save never destroys the previous checkpoint.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "../core/shape.hpp"
#include "../nn/module.hpp"

namespace loom::io {

struct checkpoint_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// One tensor as stored: dtype name ("F32", "F64", "I32", "I64"), extents, raw bytes.
struct StoredTensor {
  std::string dtype;
  std::vector<std::size_t> shape;
  std::vector<char> bytes;
};

template <class T>
constexpr const char* safetensors_dtype() {
  if constexpr (std::is_same_v<T, float>) return "F32";
  else if constexpr (std::is_same_v<T, double>) return "F64";
  else if constexpr (std::is_same_v<T, std::int32_t>) return "I32";
  else return "I64";
}

/// Writes tensors (sorted by name, as other writers do) to `path` atomically.
inline void save(const std::string& path, const std::map<std::string, StoredTensor>& tensors,
                 const std::map<std::string, std::string>& metadata = {}) {
  std::string header = "{";
  std::size_t offset = 0;
  bool first = true;
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool f2 = true;
    for (const auto& [k, v] : metadata) header += (f2 ? "\"" : ",\"") + k + "\":\"" + v + "\"", f2 = false;
    header += "}";
    first = false;
  }
  for (const auto& [name, t] : tensors) {
    header += (first ? "\"" : ",\"") + name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[";
    for (std::size_t i = 0; i < t.shape.size(); ++i) header += (i ? "," : "") + std::to_string(t.shape[i]);
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + t.bytes.size()) + "]}";
    offset += t.bytes.size();
    first = false;
  }
  header += "}";
  while (header.size() % 8) header += ' ';  // data starts 8-byte aligned
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw checkpoint_error("loom::io::save: cannot write " + tmp);
    std::uint64_t n = header.size();
    char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
    f.write(len, 8);
    f.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const auto& [name, t] : tensors) f.write(t.bytes.data(), static_cast<std::streamsize>(t.bytes.size()));
    f.flush();
    if (!f) throw checkpoint_error("loom::io::save: writing " + tmp + " failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw checkpoint_error("loom::io::save: cannot move " + tmp + " to " + path + ": " + ec.message());
}

namespace detail {
/// The small JSON subset safetensors headers use: objects, strings, arrays of integers.
struct HeaderParser {
  const std::string& s;
  std::size_t i = 0;
  std::string path;
  [[noreturn]] void fail(const std::string& what) const {
    throw checkpoint_error("loom::io::load: " + path + ": bad header (" + what + " at byte " + std::to_string(i) + ")");
  }
  void ws() {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  }
  void expect(char c) {
    ws();
    if (i >= s.size() || s[i] != c) fail(std::string("expected '") + c + "'");
    ++i;
  }
  bool peek(char c) {
    ws();
    return i < s.size() && s[i] == c;
  }
  std::string str() {
    expect('"');
    std::string r;
    while (i < s.size() && s[i] != '"') {
      if (s[i] == '\\' && i + 1 < s.size()) ++i;
      r += s[i++];
    }
    expect('"');
    return r;
  }
  std::size_t num() {
    ws();
    std::size_t v = 0, start = i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) v = v * 10 + std::size_t(s[i++] - '0');
    if (i == start) fail("expected a number");
    return v;
  }
  std::vector<std::size_t> nums() {
    std::vector<std::size_t> r;
    expect('[');
    if (peek(']')) return ++i, r;
    do r.push_back(num());
    while (peek(',') && ++i);
    expect(']');
    return r;
  }
  void skip_value() {  // metadata: an object of strings
    if (peek('{')) {
      ++i;
      if (peek('}')) return void(++i);
      do str(), expect(':'), str();
      while (peek(',') && ++i);
      expect('}');
    } else {
      str();
    }
  }
};
}  // namespace detail

/// Reads every tensor of a safetensors file; throws with the path and what was wrong.
inline std::map<std::string, StoredTensor> load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw checkpoint_error("loom::io::load: cannot open " + path);
  f.seekg(0, std::ios::end);
  const auto file_size = static_cast<std::uint64_t>(f.tellg());
  f.seekg(0);
  unsigned char len[8];
  if (file_size < 8 || !f.read(reinterpret_cast<char*>(len), 8)) throw checkpoint_error("loom::io::load: " + path + " is too short");
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  if (n > file_size - 8) throw checkpoint_error("loom::io::load: " + path + ": header length " + std::to_string(n) + " exceeds the file");
  std::string header(n, '\0');
  f.read(header.data(), static_cast<std::streamsize>(n));
  const std::uint64_t data_size = file_size - 8 - n;
  detail::HeaderParser p{header, 0, path};
  std::map<std::string, StoredTensor> out;
  std::map<std::string, std::pair<std::size_t, std::size_t>> ranges;
  p.expect('{');
  if (!p.peek('}')) do {
      const std::string name = p.str();
      p.expect(':');
      if (name == "__metadata__") {
        p.skip_value();
        continue;
      }
      StoredTensor t;
      std::pair<std::size_t, std::size_t> range{0, 0};
      p.expect('{');
      do {
        const std::string key = p.str();
        p.expect(':');
        if (key == "dtype") t.dtype = p.str();
        else if (key == "shape") t.shape = p.nums();
        else if (key == "data_offsets") {
          const auto r = p.nums();
          if (r.size() != 2) p.fail("data_offsets needs two numbers");
          range = {r[0], r[1]};
        } else p.fail("unknown key '" + key + "'");
      } while (p.peek(',') && ++p.i);
      p.expect('}');
      if (range.second < range.first || range.second > data_size)
        throw checkpoint_error("loom::io::load: " + path + ": tensor '" + name + "' lies outside the file (truncated?)");
      ranges[name] = range;
      out[name] = std::move(t);
    } while (p.peek(',') && ++p.i);
  p.expect('}');
  for (auto& [name, t] : out) {
    const auto [b, e] = ranges[name];
    t.bytes.resize(e - b);
    f.seekg(static_cast<std::streamoff>(8 + n + b));
    if (!f.read(t.bytes.data(), static_cast<std::streamsize>(e - b)))
      throw checkpoint_error("loom::io::load: " + path + ": cannot read tensor '" + name + "'");
  }
  return out;
}

inline std::string shape_text(const std::vector<std::size_t>& d) {
  std::string s = "[";
  for (std::size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

/// A named float/double array to store (parameters, buffers, optimizer state).
template <class T>
StoredTensor stored(const T* data, const std::vector<std::size_t>& shape) {
  std::size_t n = 1;
  for (auto d : shape) n *= d;
  StoredTensor t{safetensors_dtype<T>(), shape, std::vector<char>(n * sizeof(T))};
  std::memcpy(t.bytes.data(), data, n * sizeof(T));
  return t;
}
/// Copies a stored tensor into `data`, checking dtype and shape (the message names both shapes).
template <class T>
void restore(const std::map<std::string, StoredTensor>& file, const std::string& name, T* data,
             const std::vector<std::size_t>& shape, const std::string& path) {
  const auto it = file.find(name);
  if (it == file.end()) throw checkpoint_error("loom::io::load: " + path + " has no tensor '" + name + "'");
  const auto& t = it->second;
  if (t.shape != shape)
    throw checkpoint_error("loom::io::load: tensor '" + name + "' has shape " + shape_text(t.shape) + " in " + path +
                           " but " + shape_text(shape) + " in the model");
  if (t.dtype != safetensors_dtype<T>())
    throw checkpoint_error("loom::io::load: tensor '" + name + "' is " + t.dtype + " in " + path + " but " +
                           safetensors_dtype<T>() + " in the model");
  std::memcpy(data, t.bytes.data(), t.bytes.size());
}

/// A tensor on any device, stored (device tensors are copied to the host first).
template <class T, class S, class D>
StoredTensor stored(const Tensor<T, S, D>& t) {
  const auto h = t.template to<cpu>();
  return stored(h.data(), std::vector<std::size_t>(h.dims().begin(), h.dims().end()));
}
/// Restores a tensor on any device (through a host copy where it is not contiguous host memory).
template <class T, class S, class D>
void restore(const std::map<std::string, StoredTensor>& file, const std::string& name, const Tensor<T, S, D>& t,
             const std::string& path) {
  const std::vector<std::size_t> shape(t.dims().begin(), t.dims().end());
  if constexpr (HostDevice<D>) {
    if (t.is_contiguous()) return restore(file, name, t.data(), shape, path);
  }
  Tensor<T, S, cpu> h(t.dims());
  restore(file, name, h.data(), shape, path);
  t.assign(h.template to<D>());
}

/// Saves a module's parameters (by their dotted names) plus any extra named tensors.
template <nn::Module M>
void save_module(const std::string& path, const M& m, std::map<std::string, StoredTensor> extra = {}) {
  m.visit([&](const std::string& name, const auto& p) { extra[name] = stored(p.value()); }, "");
  if constexpr (requires { m.visit_buffers([](const std::string&, std::vector<double>&) {}, ""); })
    m.visit_buffers([&](const std::string& name, const std::vector<double>& b) { extra[name] = stored(b.data(), {b.size()}); }, "");
  save(path, extra);
}
/// Loads a module's parameters; returns the whole file for callers that stored more (optimizer state).
template <nn::Module M>
std::map<std::string, StoredTensor> load_module(const std::string& path, const M& m) {
  auto file = load(path);
  m.visit([&](const std::string& name, const auto& p) { restore(file, name, p.value(), path); }, "");
  if constexpr (requires { m.visit_buffers([](const std::string&, std::vector<double>&) {}, ""); })
    m.visit_buffers([&](const std::string& name, std::vector<double>& b) { restore(file, name, b.data(), {b.size()}, path); }, "");
  return file;
}

/// Optimizer state as named tensors ("optim.<param>.<buffer>", "optim.step").
template <class Opt>
std::map<std::string, StoredTensor> optimizer_state(Opt& opt) {
  std::map<std::string, StoredTensor> r;
  for (auto& [name, buf] : opt.state_buffers()) r["optim." + name] = stored(*buf);
  const auto step = static_cast<std::int64_t>(opt.step_count());
  r["optim.step"] = stored(&step, {1});
  return r;
}
template <class Opt>
void restore_optimizer(Opt& opt, const std::map<std::string, StoredTensor>& file, const std::string& path) {
  for (auto& [name, buf] : opt.state_buffers()) restore(file, "optim." + name, *buf, path);
  std::int64_t step = 0;
  restore(file, "optim.step", &step, {1}, path);
  opt.step_count() = static_cast<std::size_t>(step);
}

}  // namespace loom::io

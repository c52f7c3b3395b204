// loom/data/text.hpp — text corpora for language models: a character- or word-level vocabulary, token
// streams batchified into [N, B] columns, and get_batch(i, bptt) windows (inputs and next-token
// targets, time-first). The default corpus is Debian's `fortunes` package (/usr/share/games/fortunes),
// split deterministically: every tenth fortune goes to validation.
#pragma once
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "idx.hpp"

namespace loom::data {

/// Token <-> id. Character level: one token per byte; word level: whitespace-separated words, with
/// "<eos>" closing every line.
class Vocabulary {
 public:
  enum class Level { chars, words };
  Vocabulary() = default;
  explicit Vocabulary(Level level) : level_(level) {}
  Level level() const { return level_; }
  std::size_t size() const { return tokens_.size(); }
  const std::string& token(std::size_t id) const { return tokens_.at(id); }
  /// Adds a token if it is new; returns its id.
  std::int64_t add(const std::string& t) {
    auto [it, inserted] = ids_.emplace(t, static_cast<std::int64_t>(tokens_.size()));
    if (inserted) tokens_.push_back(t);
    return it->second;
  }
  /// The id of a known token; throws data_error naming the token otherwise.
  std::int64_t id(const std::string& t) const {
    auto it = ids_.find(t);
    if (it == ids_.end())
      throw data_error("loom::data::Vocabulary: " + describe(t) + " is not in the vocabulary (" +
                       std::to_string(size()) + " tokens)");
    return it->second;
  }
  bool contains(const std::string& t) const { return ids_.count(t) != 0; }
  /// Splits text into tokens at this vocabulary's level.
  std::vector<std::string> split(const std::string& text) const {
    std::vector<std::string> out;
    if (level_ == Level::chars) {
      for (char c : text) out.emplace_back(1, c);
      return out;
    }
    std::istringstream lines(text);
    std::string line, w;
    while (std::getline(lines, line)) {
      std::istringstream ws(line);
      while (ws >> w) out.push_back(w);
      out.push_back("<eos>");
    }
    return out;
  }
  /// Token ids of text (every token must be known).
  std::vector<std::int64_t> encode(const std::string& text) const {
    std::vector<std::int64_t> ids;
    for (const auto& t : split(text)) ids.push_back(id(t));
    return ids;
  }
  std::string decode(const std::vector<std::int64_t>& ids) const {
    std::string s;
    for (std::size_t k = 0; k < ids.size(); ++k) {
      const auto& t = token(static_cast<std::size_t>(ids[k]));
      if (level_ == Level::words && k) s += t == "<eos>" ? "" : (token(static_cast<std::size_t>(ids[k - 1])) == "<eos>" ? "" : " ");
      s += level_ == Level::words && t == "<eos>" ? "\n" : t;
    }
    return s;
  }

 private:
  static std::string describe(const std::string& t) {
    if (t.size() == 1 && !std::isprint(static_cast<unsigned char>(t[0])))
      return "character code " + std::to_string(static_cast<unsigned char>(t[0]));
    return "'" + t + "'";
  }
  Level level_ = Level::chars;
  std::vector<std::string> tokens_;
  std::map<std::string, std::int64_t> ids_;
};

/// A corpus: a vocabulary built from the training text, and train / validation token streams.
struct Corpus {
  Vocabulary vocab;
  std::vector<std::int64_t> train, valid;

  /// Builds the vocabulary from `train_text` (and `valid_text`, so validation tokens are known).
  static Corpus from_text(const std::string& train_text, const std::string& valid_text,
                          Vocabulary::Level level = Vocabulary::Level::chars) {
    if (train_text.empty()) throw data_error("loom::data::Corpus: the training text is empty");
    Corpus c{Vocabulary(level), {}, {}};
    for (const auto& t : c.vocab.split(train_text)) c.train.push_back(c.vocab.add(t));
    for (const auto& t : c.vocab.split(valid_text)) c.valid.push_back(c.vocab.add(t));
    if (c.train.size() < 2) throw data_error("loom::data::Corpus: the training text has fewer than two tokens");
    return c;
  }
};

/// The fortunes of the given files of a fortune directory (entries separated by lines holding "%").
inline std::vector<std::string> read_fortunes(const std::string& dir, const std::vector<std::string>& files) {
  std::vector<std::string> out;
  for (const auto& name : files) {
    const std::string path = dir + "/" + name;
    if (!std::filesystem::exists(path))
      throw data_error("loom::data: " + path + " does not exist (install it with: apt-get install fortunes)");
    std::ifstream f(path, std::ios::binary);
    std::string line, cur;
    while (std::getline(f, line)) {
      if (line == "%") {
        if (!cur.empty()) out.push_back(cur);
        cur.clear();
      } else {
        cur += line + "\n";
      }
    }
    if (!cur.empty()) out.push_back(cur);
  }
  return out;
}

/// Debian's fortunes as a corpus: every tenth fortune (in file order) is validation text.
struct Fortunes {
  static constexpr const char* default_dir = "/usr/share/games/fortunes";
  static Corpus load(const std::string& dir = default_dir, Vocabulary::Level level = Vocabulary::Level::chars,
                     const std::vector<std::string>& files = {"fortunes", "computers", "science", "humorists",
                                                              "literature", "wisdom"}) {
    const auto all = read_fortunes(dir, files);
    std::string train, valid;
    for (std::size_t i = 0; i < all.size(); ++i) (i % 10 == 9 ? valid : train) += all[i];
    if (train.empty()) throw data_error("loom::data::Fortunes: no fortunes found in " + dir);
    return Corpus::from_text(train, valid, level);
  }
};

using Tokens = Tensor<std::int64_t, Shape<dyn, dyn>>;

/// Cuts a token stream into B columns [N / B, B] (the tail that does not fill a row is dropped).
inline Tokens batchify(const std::vector<std::int64_t>& ids, std::size_t batch) {
  if (batch == 0) throw std::invalid_argument("loom::data::batchify: batch must be positive");
  const std::size_t n = ids.size() / batch;
  if (n < 2)
    throw data_error("loom::data::batchify: " + std::to_string(ids.size()) + " tokens are too few for " +
                     std::to_string(batch) + " columns");
  Tokens t({n, batch});
  for (std::size_t b = 0; b < batch; ++b)
    for (std::size_t i = 0; i < n; ++i) t(i, b) = ids[b * n + i];
  return t;
}

/// Inputs rows [i, i + T) and targets rows [i + 1, i + T + 1) of batchified data (views, no copy);
/// T = min(bptt, N - 1 - i).
inline std::pair<Tokens, Tokens> get_batch(const Tokens& data, std::size_t i, std::size_t bptt) {
  const std::size_t N = data.dims()[0], B = data.dims()[1];
  if (i + 1 >= N) throw std::out_of_range("loom::data::get_batch: row " + std::to_string(i) + " of " + std::to_string(N));
  const std::size_t T = std::min(bptt, N - 1 - i);
  return {Tokens::wrap(data.data() + i * B, {T, B}), Tokens::wrap(data.data() + (i + 1) * B, {T, B})};
}

}  // namespace loom::data

// Trains a character-level language model on Debian's fortunes (/usr/share/games/fortunes) with a
// progress bar, reports validation loss and perplexity per epoch against a unigram baseline, saves a
// checkpoint, and samples text from a prompt. --model lstm: an embedding, an LSTM carried across
// batches (truncated BPTT), a linear head. --model transformer: a decoder-only Transformer LM that
// generates through a KV cache. --device cuda keeps parameters, activations, optimizer state and the
// KV cache in device memory (char_lm_cuda is the nvcc build; this g++ build runs the device code on
// Thrust's OMP system when it links loom::device_host).
#include <CLI/CLI.hpp>
#include <loom/data/data.hpp>
#include <loom/loom.hpp>

#include "progress.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>

#ifdef _OPENMP
#include <omp.h>
#endif

using namespace loom;

constexpr std::size_t V = 128;  // vocabulary capacity (the fortunes corpus uses 109 characters)

struct Options {
  std::string model = "lstm", data_dir = data::Fortunes::default_dir, checkpoint = "char_lm.safetensors";
  std::string device = "cpu";
  std::string prompt = "The ";
  int epochs = 2, threads = 0, sample_len = 300;
  std::size_t batch = 32, bptt = 64, top_k = 0;
  double lr = 2e-3, temperature = 0.8, clip = 1.0;
  std::uint64_t seed = 0;
};

/// Embedding -> LSTM -> Linear, the LSTM's state carried between batches; parameters on device D.
template <class D = cpu>
struct CharLSTM {
  static constexpr std::size_t E = 64, H = 256;
  nn::Embedding<V, E, float, D> embed;
  nn::LSTM<E, H, 1, false, float, D> lstm;
  nn::Linear<H, V, true, float, D> head;
  static constexpr std::size_t num_params = decltype(embed)::num_params + decltype(lstm)::num_params + decltype(head)::num_params;
  explicit CharLSTM(Generator& g) : embed(g), lstm(g), head(g) {}
  template <class F>
  void visit(F&& f, const std::string& prefix) const {
    embed.visit(f, prefix + "embed.");
    lstm.visit(f, prefix + "lstm.");
    head.visit(f, prefix + "head.");
  }
};

/// Unigram baseline: cross-entropy of validation characters under the training characters' frequencies.
double unigram_loss(const data::Corpus& c) {
  std::vector<double> count(c.vocab.size(), 1.0);  // add-one smoothing
  for (auto t : c.train) count[std::size_t(t)] += 1;
  double total = 0, loss = 0;
  for (double n : count) total += n;
  for (auto t : c.valid) loss -= std::log(count[std::size_t(t)] / total);
  return loss / double(c.valid.size());
}

/// What the two models share: the epoch loop with its progress bar, validation, checkpoints and sampling.
/// `step(x, y, training)` runs one batch (x, y: [T, B] windows) and returns its mean loss; `reset()`
/// starts a stream; `next(token)` feeds one token of a sample and returns the logits of the next.
template <class Net, class D, class Step, class Reset, class Next>
int train_and_sample(const Options& o, const data::Corpus& corpus, Net& net, std::vector<nn::ParamRef<float, D>>& params,
                     Step step, Reset reset, Next next) {
  optim::Adam<float, D> opt(params, {.lr = o.lr});
  const auto train = data::batchify(corpus.train, o.batch), valid = data::batchify(corpus.valid, o.batch);
  auto run_epoch = [&](const data::Tokens& d, bool training, int epoch, const Clock::time_point t0) {
    reset(o.batch);
    double total = 0;
    std::size_t n = 0, tokens = 0;
    const std::size_t steps = (d.dims()[0] - 1 + o.bptt - 1) / o.bptt;
    for (std::size_t i = 0; i + 1 < d.dims()[0]; i += o.bptt) {
      auto [xb, yb] = data::get_batch(d, i, o.bptt);
      total += step(xb, yb, training) * double(xb.size()), tokens += xb.size();
      if (!training) continue;
      optim::clip_grad_norm(params, o.clip);
      opt.options().lr = optim::cosine_lr(o.lr, std::size_t(epoch - 1) * steps + n, steps * std::size_t(o.epochs), 20);
      opt.step_and_zero_grad();
      if (++n % 10 == 0 || n == steps) progress(epoch, n, steps, t0, total / double(tokens));
    }
    return total / double(tokens);
  };
  const double uni = unigram_loss(corpus);
  std::printf("corpus: %zu train / %zu validation characters, %zu distinct; unigram baseline: loss %.4f, "
              "perplexity %.2f\n", corpus.train.size(), corpus.valid.size(), corpus.vocab.size(), uni, std::exp(uni));
  for (int epoch = 1; epoch <= o.epochs; ++epoch) {
    const auto t0 = Clock::now();
    const double tl = run_epoch(train, true, epoch, t0);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    const double vl = run_epoch(valid, false, epoch, t0);
    std::printf("\nepoch %d: train loss %.4f  validation loss %.4f  perplexity %.2f  (unigram %.2f)  (%.1f s)\n", epoch,
                tl, vl, std::exp(vl), std::exp(uni), secs);
    io::save_module(o.checkpoint, net);
  }
  // sampling: feed the prompt one character at a time, then draw
  const auto prompt = corpus.vocab.encode(o.prompt);  // throws on a character outside the vocabulary
  reset(1);
  Generator g(o.seed + 1);
  std::vector<double> scratch;
  std::vector<std::int64_t> out(prompt.begin(), prompt.end());
  std::size_t drawn = 0;
  for (std::size_t k = 0; k < prompt.size() + std::size_t(o.sample_len); ++k) {
    const std::int64_t token = k < prompt.size() ? prompt[k] : std::int64_t(drawn);
    if (k >= prompt.size()) out.push_back(token);
    const float* logits = next(token);  // ids past the vocabulary never occur: sample among the real ones
    drawn = nn::sample(logits, corpus.vocab.size(), {.temperature = o.temperature, .top_k = o.top_k}, g, scratch);
  }
  std::printf("sample (temperature %.2f%s):\n%s\n", o.temperature,
              o.top_k ? (", top-k " + std::to_string(o.top_k)).c_str() : "", corpus.vocab.decode(out).c_str());
  std::printf("checkpoint: %s\n", o.checkpoint.c_str());
  return 0;
}

/// A host batch on device D (the host tensor itself on the CPU).
template <class D, class T>
auto on_device(const T& t) {
  if constexpr (HostDevice<D>) return t;
  else return t.template to<D>();
}

/// A program's output as host memory: itself on the CPU, else copied into `keep`.
template <class T, class S, class D>
const T* host_data(const Tensor<T, S, D>& t, Tensor<T, S>& keep) {
  if constexpr (HostDevice<D>) return t.data();
  else return (keep = t.template to<cpu>()).data();
}

template <class D>
int run_lstm(const Options& o, const data::Corpus& corpus) {
  using Net = CharLSTM<D>;
  Generator gen(o.seed);
  Net net(gen);
  std::printf("model lstm: %zu parameters (embedding %zu x %zu, LSTM %zu, head %zu)\n", Net::num_params, V, Net::E,
              Net::H, V);
  constexpr std::size_t S = 2 * Net::H;
  auto x = input<std::int64_t, Shape<dyn, dyn>, D>();  // [T, B]
  auto y = input<std::int64_t, Shape<dyn, dyn>, D>();
  auto h0 = input<float, Shape<1, dyn, S>, D>();
  auto r = net.lstm(net.embed(x), h0);
  auto logits = net.head(reshape<Shape<dyn, Net::H>>(r.out));  // [T * B, V]
  Tensor<float, DynShape<3>, D> state_out;  // the final state, written by the forward pass
  auto step = compile(nn::cross_entropy(logits, reshape<Shape<dyn>>(y)) + export_to(r.state, state_out));
  auto next_logits = compile(logits + export_to(r.state, state_out) * 0.0f);  // generation: T = 1, B = 1
  auto params = nn::parameters<float, D>(net);
  Tensor<float, Shape<1, dyn, S>, D> state;
  Tensor<float, Shape<dyn, V>> host_logits;
  data::Tokens tok({1, 1});
  auto carry = [&] { detail::DeviceMemory<D>::copy(state.data(), state_out.data(), state.size()); };  // detached
  return train_and_sample(
      o, corpus, net, params,
      [&](const data::Tokens& xb, const data::Tokens& yb, bool training) {
        const double l = step.forward(on_device<D>(xb), on_device<D>(yb), state).item();
        carry();
        if (training) step.backward();
        return l;
      },
      [&](std::size_t batch) {
        state = Tensor<float, Shape<1, dyn, S>, D>({1, batch, S});
        state.fill(0.0f);
      },
      [&](std::int64_t token) {
        tok(0, 0) = token;
        const auto out = next_logits.forward(on_device<D>(tok), state);
        carry();
        return host_data(out, host_logits);
      });
}

/// Decoder-only Transformer: 2 pre-norm layers of width 128 with 4 heads, 128 positions, dropout 0.1.
using CharTransformer = nn::TransformerLM<V, 128, 4, 2, 128, 512, 100>;

template <class D>
int run_transformer(const Options& o, const data::Corpus& corpus) {
  using Net = CharTransformer::on_device<D>;
  if (o.bptt > Net::max_len)
    throw shape_error("char_lm: --bptt " + std::to_string(o.bptt) + " is longer than the positional table (" +
                      std::to_string(Net::max_len) + ")");
  Generator gen(o.seed);
  Net net(gen);
  std::printf("model transformer: %zu parameters (%zu layer(s), width %zu, 4 heads, %zu positions)\n", Net::num_params,
              Net::num_layers, Net::dim, Net::max_len);
  auto x = input<std::int64_t, Shape<dyn, dyn>, D>();  // [B, T]: the [T, B] windows, transposed (a view)
  auto y = input<std::int64_t, Shape<dyn, dyn>, D>();
  auto pos = input<std::int64_t, Shape<dyn>, D>();
  auto logits = net(x, pos);  // [B, T, V]
  auto step = compile(nn::cross_entropy(reshape<Shape<dyn, V>>(logits), reshape<Shape<dyn>>(y)));
  auto cache = net.make_cache(1);
  auto lengths = input<std::int64_t, Shape<dyn>, D>();
  auto decode = compile(net.decode(x, pos, lengths, cache));  // one token at a time against the KV cache
  auto params = nn::parameters<float, D>(net);
  data::Tokens tok({1, 1});
  Tensor<std::int64_t, Shape<dyn>> len({1});
  Tensor<float, Shape<dyn, dyn, V>> host_logits;
  // positions 0 .. max_len - 1, built once; each step binds a view of them (no allocation per step)
  const auto all_positions = on_device<D>(Net::positions(Net::max_len));
  auto positions = [&](std::size_t n, std::size_t start) {
    return Tensor<std::int64_t, Shape<dyn>, D>::wrap(all_positions.data() + start, {n});
  };
  return train_and_sample(
      o, corpus, net, params,
      [&](const data::Tokens& xb, const data::Tokens& yb, bool training) {
        net.set_training(training);
        const auto T = xb.dims()[0];
        const double l = step.forward(on_device<D>(xb.transpose()), on_device<D>(yb.transpose()), positions(T, 0)).item();
        if (training) step.backward();
        return l;
      },
      [&](std::size_t) { cache.reset(); },
      [&](std::int64_t token) {
        if (cache.pos == Net::max_len) {  // the window is full: restart it from this token
          cache.reset();
        }
        tok(0, 0) = token;
        len(0) = std::int64_t(cache.pos + 1);
        const auto out = decode.forward(on_device<D>(tok), positions(1, cache.pos), on_device<D>(len));
        ++cache.pos;
        return host_data(out, host_logits);
      });
}

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Train a character-level language model on Debian's fortunes"};
  app.add_option("--model", o.model, "network: lstm | transformer")->check(CLI::IsMember({"lstm", "transformer"}));
  app.add_option("--epochs", o.epochs, "epochs")->check(CLI::PositiveNumber);
  app.add_option("--batch", o.batch, "batch columns")->check(CLI::PositiveNumber);
  app.add_option("--bptt", o.bptt, "sequence length per step")->check(CLI::PositiveNumber);
  app.add_option("--lr", o.lr, "Adam learning rate (cosine decay, 20 warmup steps)");
  app.add_option("--clip", o.clip, "gradient clipping by global norm");
  app.add_option("--threads", o.threads, "OpenMP threads (0: all cores)");
  app.add_option("--seed", o.seed, "seed for initialization and sampling");
  app.add_option("--data-dir", o.data_dir, "fortune directory");
  app.add_option("--checkpoint", o.checkpoint, "safetensors file written after every epoch");
  app.add_option("--prompt", o.prompt, "text to continue");
  app.add_option("--sample-len", o.sample_len, "characters to generate");
  app.add_option("--temperature", o.temperature, "sampling temperature (0: greedy)");
  app.add_option("--top-k", o.top_k, "sample among the k most likely characters (0: all)");
  app.add_option("--device", o.device, "cpu | cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  CLI11_PARSE(app, argc, argv);
#ifdef _OPENMP
  if (o.threads > 0) omp_set_num_threads(o.threads);
#endif
  try {
    const auto corpus = data::Fortunes::load(o.data_dir);
    if (corpus.vocab.size() > V) {
      std::fprintf(stderr, "char_lm: the corpus has %zu distinct characters; the model holds %zu\n", corpus.vocab.size(), V);
      return 1;
    }
    if (o.device == "cuda") {
#if defined(__CUDACC__) || defined(LOOM_ENABLE_DEVICE)
      std::printf("device: loom::cuda on the %s system\n", device::system_name());
      return o.model == "transformer" ? run_transformer<loom::cuda>(o, corpus) : run_lstm<loom::cuda>(o, corpus);
#else
      throw std::invalid_argument("--device cuda: this binary was built without the device backend (build char_lm_cuda)");
#endif
    }
    return o.model == "transformer" ? run_transformer<cpu>(o, corpus) : run_lstm<cpu>(o, corpus);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "char_lm: %s\n", e.what());
    return 1;
  }
}

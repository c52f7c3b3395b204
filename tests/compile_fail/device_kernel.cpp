// expect: this op has no kernel for loom::cuda yet
// flags: -DLOOM_ENABLE_DEVICE
// A program over loom::cuda tensors that uses a kernel op with only a host kernel (a user's op written
// for the CPU) is rejected when it is compiled, naming the reason; over loom::cpu tensors it builds.
#include <loom/loom.hpp>

struct HostOnlyTwice {  // y = 2x, a host loop only
  static constexpr loom::Kind kind = loom::Kind::kernel;
  static constexpr bool differentiable = false;
  static constexpr std::string_view name = "host_only_twice";
  template <class X>
  using shape = X;
  template <std::size_t R>
  loom::Dims<R> dims(const loom::Dims<R>& x) const { return x; }
  template <class T, std::size_t R>
  void forward(const loom::detail::View<T, R>& out, const loom::detail::View<T, R>& x) const {
    loom::detail::for_each_offset(x, [&](std::size_t k, std::ptrdiff_t off) { out.data[k] = 2 * x.data[off]; });
  }
};

int main() {
#ifdef LOOM_OK
  using D = loom::cpu;
#else
  using D = loom::cuda;
#endif
  loom::Param<float, loom::Shape<4, 8>, D> x;
  auto p = loom::compile(loom::sum(loom::make_node(HostOnlyTwice{}, x)));
  p.forward();
}

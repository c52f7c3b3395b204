// loom/backend/exec.hpp — what a compiled program asks of a backend, and how it finds it: the fused
// loop runner of device D is backend::Exec<D> (cpu: backend/cpu/fused.hpp; cuda: backend/device/fused.hpp).
#pragma once
#include <algorithm>
#include <cstddef>

#include "../core/device.hpp"
#include "../expr/slots.hpp"
#include "cpu/parallel.hpp"

namespace loom {

/// Selects the device overload of a kernel op's forward/backward: `forward(on<cuda>, out, in...)`.
template <class D>
struct on {};

namespace backend {

/// What a fused loop does with each computed value at its destination.
enum class Mode { assign, add, max };

/// Per device D: `access<T, R>(data, strides)`, `slot_access<T, RS, R>(slot, adj, extents)`,
/// `make_out<Mode>(access, expression, slots, extents)` and `run_fused<R>(extents, parallel, outs...)`.
template <class D>
struct Exec;

namespace device {
/// C (+)= A B on the device (declared here so that ops name it; defined in backend/device/gemm.hpp).
template <class T>
void gemm(const loom::detail::View<T, 2>& C, const loom::detail::View<T, 2>& A, const loom::detail::View<T, 2>& B,
          bool accumulate);
/// `batches` products C + i bc (+)= (A + i ba)(B + i bb) in one call.
template <class T>
void gemm_batched(const loom::detail::View<T, 2>& C, const loom::detail::View<T, 2>& A, const loom::detail::View<T, 2>& B,
                  bool accumulate, std::size_t batches, std::ptrdiff_t bc, std::ptrdiff_t ba, std::ptrdiff_t bb);
/// *p += v as one atomic operation (scatter-adds into gradients; defined in backend/device/fused.hpp).
template <class T>
LOOM_HOST_DEVICE void atomic_add(T* p, T v);
/// f(i) for every i in [0, n), as one device kernel (defined in backend/device/fused.hpp).
template <class F>
void for_n(std::size_t n, const F& f);
/// The sum of f(i) over [0, n), as one device reduction (the result comes back to the host).
template <class V, class F>
V sum_n(std::size_t n, const F& f);
/// *dst = (the sum of f(i) over [0, n), in V) / div, converted to T, in device memory: nothing comes back
/// to the host, so the host does not wait for the device (a loss value).
template <class V, class T, class F>
void sum_into(std::size_t n, const F& f, T* dst, V div);
/// Multi-head attention on the device's own tiled kernels (defined in backend/device/attention.hpp): the
/// forward (out rows, each row's log-sum-exp) and the backward after the row dots (dQ, dK, dV, each
/// optional); false, with nothing done, where the device has none for these operands.
template <class C, class CM, class WM, class T>
bool attention_forward(const C& c, std::size_t heads, const CM& q, const CM& k, const CM& v, const WM& out, T* lse);
template <class C, class CM, class WM, class T>
bool attention_backward(const C& c, std::size_t heads, bool causal, const CM& q, const CM& k, const CM& v, const CM& g,
                        const T* lse, const T* rowdot, const WM& dq, const WM& dk, const WM& dv);
/// dst[s] = the sum of f(s, i) over i in [0, len), for every segment s in [0, segs), into device memory
/// (per-channel and per-column statistics: each segment is split over many threads).
template <class F>
void segment_sums(std::size_t segs, std::size_t len, const F& f, double* dst);
}  // namespace device

/// A functor whose host form is f.block(i0, count): elements [i0, i0 + count) at once (vectorized).
template <class F>
concept BlockFunctor = requires(const F& f, std::size_t i) { f.block(i, i); };

/// f(i) for every i in [0, n) on device D: a loop on the host, one kernel on a device (code that is
/// written once for both: optimizer updates, the recurrent scans). On the host, a BlockFunctor runs
/// block by block (each small enough to stay in L1 across the block's passes), and a long range is
/// split over the OpenMP threads (each i is independent, as in a device kernel).
template <class D, class F>
void each(std::size_t n, const F& f) {
  if constexpr (HostDevice<D> && BlockFunctor<F>) {
    constexpr std::size_t B = 1024;
    auto blocks = [&](std::size_t i0, std::size_t i1) {
      for (std::size_t i = i0; i < i1; i += B) f.block(i, std::min(B, i1 - i));
    };
#ifdef _OPENMP
    if (n >= (std::size_t{1} << 16) && cpu::free_threads() > 1) {
#pragma omp parallel
      {
        const std::size_t t = static_cast<std::size_t>(omp_get_thread_num()),
                          nt = static_cast<std::size_t>(omp_get_num_threads()), nb = (n + B - 1) / B;
        blocks(std::min(n, nb * t / nt * B), std::min(n, nb * (t + 1) / nt * B));
      }
      return;
    }
#endif
    blocks(0, n);
  } else if constexpr (HostDevice<D>) {
    for (std::size_t i = 0; i < n; ++i) f(i);
  } else {
    device::for_n(n, f);
  }
}

}  // namespace backend
}  // namespace loom

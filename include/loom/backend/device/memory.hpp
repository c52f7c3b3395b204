// loom/backend/device/memory.hpp — device memory: a caching allocator (blocks go back to a free list,
// not to cudaFree, so a steady-state step never calls cudaMalloc), the current stream, the execution
// policy every device algorithm runs with (its temporaries come from the same cache), and
// loom::cuda's DeviceMemory (allocation, fills, copies, host <-> device transfers).
#pragma once
#include <thrust/execution_policy.h>

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <unordered_map>

#include "../../core/device.hpp"
#include "../../expr/slots.hpp"
#include "config.hpp"

namespace loom::device {

/// What the allocator has done so far (tests read it to prove a steady state does not allocate).
struct AllocatorStats {
  std::size_t system_allocs = 0;  ///< blocks obtained from the system (cudaMalloc)
  std::size_t reuses = 0;         ///< requests served from the cache
  std::size_t bytes_in_use = 0;   ///< handed out and not yet returned
  std::size_t bytes_cached = 0;   ///< returned and kept for reuse
};

/// Size-keyed free lists over the system allocator. A request takes the smallest cached block that
/// fits and is at most twice its size; returned blocks stay cached until empty_cache().
class CachingAllocator {
 public:
  static CachingAllocator& instance() {
    static auto* a = new CachingAllocator;  // never destroyed: tensors in static storage may outlive it
    return *a;
  }
  void* allocate(std::size_t bytes) {
    bytes = round(bytes);
    std::lock_guard lock(m_);
    if (auto it = free_.lower_bound(bytes); it != free_.end() && it->first <= 2 * bytes) {
      void* p = it->second;
      const std::size_t size = it->first;
      free_.erase(it);
      used_[p] = size;
      ++stats_.reuses;
      stats_.bytes_cached -= size;
      stats_.bytes_in_use += size;
      return p;
    }
    void* p = system_alloc(bytes);
    used_[p] = bytes;
    ++stats_.system_allocs;
    stats_.bytes_in_use += bytes;
    return p;
  }
  void deallocate(void* p) {
    if (!p) return;
    std::lock_guard lock(m_);
    auto it = used_.find(p);
    if (it == used_.end()) return;
    free_.emplace(it->second, p);
    stats_.bytes_in_use -= it->second;
    stats_.bytes_cached += it->second;
    used_.erase(it);
  }
  /// Gives every cached block back to the system.
  void empty_cache() {
    std::lock_guard lock(m_);
    release_all();
  }
  AllocatorStats stats() const {
    std::lock_guard lock(m_);
    return stats_;
  }

 private:
  static constexpr std::size_t alignment = 256;  // cudaMalloc's guarantee; the host systems get the same
  static std::size_t round(std::size_t n) { return n == 0 ? alignment : (n + alignment - 1) / alignment * alignment; }
  void* system_alloc(std::size_t bytes) {
#if defined(LOOM_CUDA)
    void* p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {  // out of memory: free the cache, then try once more
      (void)cudaGetLastError();
      release_all();
      LOOM_CUDA_CHECK(cudaMalloc(&p, bytes));
    }
    return p;
#else
    return ::operator new(bytes, std::align_val_t{alignment});
#endif
  }
  void release_all() {
    for (auto& [size, p] : free_) {
#if defined(LOOM_CUDA)
      (void)cudaFree(p);
#else
      ::operator delete(p, std::align_val_t{alignment});
#endif
      stats_.bytes_cached -= size;
    }
    free_.clear();
  }

  mutable std::mutex m_;
  std::multimap<std::size_t, void*> free_;
  std::unordered_map<void*, std::size_t> used_;
  AllocatorStats stats_{};
};

/// The allocator's counters.
inline AllocatorStats allocator_stats() { return CachingAllocator::instance().stats(); }
/// Returns cached device memory to the system (cudaFree).
inline void empty_cache() { CachingAllocator::instance().empty_cache(); }

/// Thrust's temporary storage (reductions, sorts) from the same cache.
struct TempAllocator {
  using value_type = char;
  char* allocate(std::ptrdiff_t n) { return static_cast<char*>(CachingAllocator::instance().allocate(static_cast<std::size_t>(n))); }
  void deallocate(char* p, std::size_t) { CachingAllocator::instance().deallocate(p); }
};

#if defined(LOOM_CUDA)
using stream_t = cudaStream_t;
#else
using stream_t = void*;
#endif

namespace detail {
inline stream_t& current_stream_ref() {
  static thread_local stream_t s{};  // the default stream until a StreamGuard says otherwise
  return s;
}
}  // namespace detail

/// The stream this thread's device work is queued on.
inline stream_t current_stream() { return detail::current_stream_ref(); }

/// An owned CUDA stream (non-blocking with respect to the legacy default stream).
class Stream {
 public:
  Stream() {
#if defined(LOOM_CUDA)
    LOOM_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking));
#endif
  }
  ~Stream() {
#if defined(LOOM_CUDA)
    if (s_) (void)cudaStreamDestroy(s_);
#endif
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  stream_t get() const { return s_; }
  void synchronize() const {
#if defined(LOOM_CUDA)
    LOOM_CUDA_CHECK(cudaStreamSynchronize(s_));
#endif
  }

 private:
  stream_t s_{};
};

/// Queues this thread's device work on `s` until the guard goes out of scope.
class StreamGuard {
 public:
  explicit StreamGuard(const Stream& s) : prev_(std::exchange(detail::current_stream_ref(), s.get())) {}
  ~StreamGuard() { detail::current_stream_ref() = prev_; }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  stream_t prev_;
};

/// Waits until the current stream's work is done.
inline void synchronize() {
#if defined(LOOM_CUDA)
  LOOM_CUDA_CHECK(cudaStreamSynchronize(current_stream()));
#endif
}

/// The execution policy of every device algorithm: the current stream, temporaries from the cache.
inline auto policy() {
#if defined(LOOM_CUDA)
  return thrust::cuda::par_nosync(TempAllocator{}).on(current_stream());
#else
  return thrust::device(TempAllocator{});
#endif
}

/// Whether a CUDA device is present (always false on the host systems).
inline bool gpu_available() {
#if defined(LOOM_CUDA)
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return n > 0;
#else
  return false;
#endif
}

}  // namespace loom::device

namespace loom::detail {

/// loom::cuda's memory: cached device blocks; copies on the current stream.
template <>
struct DeviceMemory<cuda> {
  static constexpr bool enabled = true;
  template <class T>
  static std::shared_ptr<T> allocate(std::size_t n) {
    T* p = static_cast<T*>(device::CachingAllocator::instance().allocate(n * sizeof(T)));
    return std::shared_ptr<T>(p, [](T* q) { device::CachingAllocator::instance().deallocate(q); });
  }
  template <class T>
  static void fill(T* p, std::size_t n, T v);  // (a kernel: defined in backend/device/fused.hpp)
  template <class T>
  static void copy(T* dst, const T* src, std::size_t n) {
    if (dst == src || n == 0) return;
#if defined(LOOM_CUDA)
    const bool overlap = dst < src + n && src < dst + n;
    if (!overlap) {
      LOOM_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToDevice, device::current_stream()));
      return;
    }
    auto tmp = allocate<T>(n);
    LOOM_CUDA_CHECK(cudaMemcpyAsync(tmp.get(), src, n * sizeof(T), cudaMemcpyDeviceToDevice, device::current_stream()));
    LOOM_CUDA_CHECK(cudaMemcpyAsync(dst, tmp.get(), n * sizeof(T), cudaMemcpyDeviceToDevice, device::current_stream()));
    device::synchronize();  // tmp goes back to the cache when this returns
#else
    std::memmove(dst, src, n * sizeof(T));
#endif
  }
  static void zero_bytes(void* p, std::size_t n) {
#if defined(LOOM_CUDA)
    LOOM_CUDA_CHECK(cudaMemsetAsync(p, 0, n, device::current_stream()));
#else
    std::memset(p, 0, n);
#endif
  }
  template <class T>
  static void to_host(T* host, const T* src, std::size_t n) {
#if defined(LOOM_CUDA)
    LOOM_CUDA_CHECK(cudaMemcpyAsync(host, src, n * sizeof(T), cudaMemcpyDeviceToHost, device::current_stream()));
    device::synchronize();
#else
    std::memcpy(host, src, n * sizeof(T));
#endif
  }
  template <class T>
  static void from_host(T* dst, const T* host, std::size_t n) {
#if defined(LOOM_CUDA)
    LOOM_CUDA_CHECK(cudaMemcpyAsync(dst, host, n * sizeof(T), cudaMemcpyHostToDevice, device::current_stream()));
    device::synchronize();  // the host buffer may go away when this returns
#else
    std::memcpy(dst, host, n * sizeof(T));
#endif
  }
  /// Strided fill and copy (defined with the fused loops in backend/device/fused.hpp).
  template <class T, std::size_t R>
  static void fill_strided(const View<T, R>& dst, T v);
  template <class T, std::size_t R>
  static void assign_strided(const View<T, R>& dst, const View<T, R>& src);
};

}  // namespace loom::detail

// loom/backend/device/config.hpp — which device system the device backend runs on, and error checks.
// Under nvcc it is CUDA (Thrust's CUDA system + cuBLAS). Defining LOOM_ENABLE_DEVICE in a host compiler
// build selects Thrust's OMP system (or CPP without OpenMP): the same device code runs on host threads,
// which is how the device path is tested on machines without a GPU.
#pragma once
#if !defined(__CUDACC__) && !defined(THRUST_DEVICE_SYSTEM)
#ifdef _OPENMP
#define THRUST_DEVICE_SYSTEM THRUST_DEVICE_SYSTEM_OMP
#else
#define THRUST_DEVICE_SYSTEM THRUST_DEVICE_SYSTEM_CPP
#endif
#endif

#include <thrust/version.h>
#include <thrust/detail/config.h>

#include <string>

#include "../../core/error.hpp"

#if defined(__CUDACC__) && THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_CUDA
#define LOOM_CUDA 1
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif

namespace loom::device {

/// The name of the system device code runs on ("cuda", "omp" or "cpp").
inline const char* system_name() {
#if defined(LOOM_CUDA)
  return "cuda";
#elif THRUST_DEVICE_SYSTEM == THRUST_DEVICE_SYSTEM_OMP
  return "omp";
#else
  return "cpp";
#endif
}

namespace detail {
[[noreturn]] inline void fail(const char* call, const char* file, int line, const std::string& what) {
  throw cuda_error(std::string("loom: ") + call + " failed at " + file + ":" + std::to_string(line) + ": " + what);
}
#if defined(LOOM_CUDA)
inline void check(cudaError_t e, const char* call, const char* file, int line) {
  if (e != cudaSuccess) fail(call, file, line, std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")");
}
inline void check(cublasStatus_t e, const char* call, const char* file, int line) {
  if (e != CUBLAS_STATUS_SUCCESS) fail(call, file, line, std::string(cublasGetStatusName(e)) + " (" + cublasGetStatusString(e) + ")");
}
#endif
}  // namespace detail

}  // namespace loom::device

/// Checks a CUDA runtime or cuBLAS call; a failure throws loom::cuda_error naming the call.
#define LOOM_CUDA_CHECK(call) ::loom::device::detail::check((call), #call, __FILE__, __LINE__)

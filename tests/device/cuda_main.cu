// Runs the CUDA tests where a GPU is present; elsewhere reports them skipped (ctest: SKIP_RETURN_CODE 77).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <loom/loom.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (!loom::device::gpu_available()) {
    std::printf("SKIPPED: no CUDA device is visible (cudaGetDeviceCount found none); the CUDA tests run only on a GPU\n");
    return 77;
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}

// loom/backend/device/device.hpp — the device backend (loom::cuda): memory, fused kernels, GEMM, attention.
// <loom/loom.hpp> includes it when the TU is compiled by nvcc or defines LOOM_ENABLE_DEVICE.
#pragma once
#include "config.hpp"
#include "memory.hpp"
#include "fused.hpp"
#include "gemm.hpp"
#include "attention.hpp"

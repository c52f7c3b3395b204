// loom/loom.hpp — the umbrella header: everything a model author needs.
#pragma once
#include "core/error.hpp"
#include "core/shape.hpp"
#include "core/tensor.hpp"
#if defined(__CUDACC__) || defined(LOOM_ENABLE_DEVICE)
#include "backend/device/device.hpp"
#endif
#include "expr/expr.hpp"
#include "ops/elementwise.hpp"
#include "ops/reduce.hpp"
#include "ops/matmul.hpp"
#include "ops/shape.hpp"
#include "ops/index.hpp"
#include "expr/program.hpp"
#include "expr/grad.hpp"
#include "nn/nn.hpp"
#include "optim/optimizer.hpp"
#include "optim/schedule.hpp"
#include "io/safetensors.hpp"

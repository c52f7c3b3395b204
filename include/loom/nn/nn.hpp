// loom/nn/nn.hpp — modules, losses.
#pragma once
#include "conv.hpp"
#include "init.hpp"
#include "layers.hpp"
#include "loss.hpp"
#include "module.hpp"
#include "norm.hpp"
#include "sequential.hpp"
#include "sampling.hpp"
#include "recurrent.hpp"
#include "transformer.hpp"

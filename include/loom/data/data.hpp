// loom/data/data.hpp — datasets (IDX / Fashion-MNIST, CIFAR-10), transforms, and the DataLoader.
#pragma once
#include "cifar.hpp"
#include "idx.hpp"
#include "loader.hpp"
#include "text.hpp"
#include "transforms.hpp"

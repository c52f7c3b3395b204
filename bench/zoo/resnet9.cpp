// Model zoo: a ResNet-9-like network (the DAWNBench CIFAR-10 layout) on [B, 3, 32, 32].
#include "common.hpp"
using namespace zoo;
template <std::size_t I, std::size_t O>
using ConvBN = nn::Sequential<nn::Conv2d<I, O, 3, 1, 1>, nn::BatchNorm2d<O>, nn::ReLU>;
template <std::size_t C>
using Res = nn::Residual<nn::Conv2d<C, C, 3, 1, 1>, nn::BatchNorm2d<C>, nn::ReLU, nn::Conv2d<C, C, 3, 1, 1>,
                         nn::BatchNorm2d<C>, nn::ReLU>;
using ResNet9 = nn::Sequential<ConvBN<3, 64>, ConvBN<64, 128>, nn::MaxPool2d<2>, Res<128>,     // 16x16
                               ConvBN<128, 256>, nn::MaxPool2d<2>,                            // 8x8
                               ConvBN<256, 512>, nn::MaxPool2d<2>, Res<512>,                  // 4x4
                               nn::GlobalAvgPool, nn::Linear<512, 10>>;
int main() { return image_classifier_step<ResNet9, 3, 32>(); }

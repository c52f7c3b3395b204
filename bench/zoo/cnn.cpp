// Model zoo: a small CNN (two conv + batch-norm + pool blocks, two linear layers) on [B, 1, 28, 28].
#include "common.hpp"
using namespace zoo;
using CNN = nn::Sequential<nn::Conv2d<1, 32, 3, 1, 1>, nn::BatchNorm2d<32>, nn::ReLU, nn::MaxPool2d<2>,
                           nn::Conv2d<32, 64, 3, 1, 1>, nn::BatchNorm2d<64>, nn::ReLU, nn::MaxPool2d<2>, nn::Flatten,
                           nn::Linear<64 * 7 * 7, 128>, nn::ReLU, nn::Dropout<250>, nn::Linear<128, 10>>;
int main() { return image_classifier_step<CNN, 1, 28>(); }

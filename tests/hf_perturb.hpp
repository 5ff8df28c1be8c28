// hf_perturb.hpp — shared by hf_test and hf_interop: every parameter of a model moved off its
// initial value (LayerNorm weights off 1, biases off 0), so that a checkpoint mapping that
// swaps or drops a tensor changes the model's output.
#pragma once

#include <moekd/core/random.hpp>
#include <moekd/tensor.hpp>

namespace moekd::testing {

template <class M>
void perturb(M& m, uint64_t seed) {
    Generator g(seed);
    NoGrad ng;
    for (auto& p : m.parameters()) {
        const Tensor<float> n = Tensor<float>::randn(p.shape(), g, 0.0, 0.1);
        for (int64_t i = 0; i < p.numel(); ++i) p.data()[i] += n.data()[i];
    }
}

}  // namespace moekd::testing

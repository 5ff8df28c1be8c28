// grad_sink.hpp — where expert_ffn writes a weight gradient: straight into a leaf parameter's
// .grad, or into a fresh tensor handed back to the autograd engine like any op's gradient.
//
// Why not always through the engine: the engine accumulates a leaf's gradient by copy-on-first /
// add-after, one more read and write of every expert weight gradient per backward (E = 64 experts
// of d 256 x ff 1024 are 128 MiB of fp32 gradients: a whole extra pass over memory, in a step
// whose time is memory traffic; bench/README.md). expert_ffn's GEMMs can instead accumulate into
// .grad themselves (beta = 1). The values are the same either way: set_direct_leaf_grads(false)
// sends every gradient through the engine (the tests compare both). Only a leaf given once, whose
// .grad is absent or a contiguous tensor of its shape, is written directly; a non-leaf, a tensor
// given twice (experts sharing a weight) or an odd existing .grad goes through the engine.
#pragma once

#include "../core/tensor.hpp"
#include "../ops/matmul.hpp"

namespace moekd::moe {

namespace detail {

/// Where one weight gradient goes: straight into a leaf's .grad (accumulating, as the engine
/// would, without a separate copy and add pass), or a fresh tensor handed back to the engine.
template <class T>
struct GradSink {
    Tensor<T> fresh;    // returned to the engine, or set as the leaf's first .grad
    Tensor<T> target;   // the leaf whose .grad this is (direct mode), else undefined
    T* data = nullptr;  // where the values go
    T beta = T(0);      // 1: accumulate into existing values
    bool active() const { return data != nullptr; }
};

/// In direct mode a leaf parameter's gradient is accumulated in place by the GEMM that makes it
/// (beta = 1), the engine's copy-on-first / add-after being the only difference; with
/// `direct` off, or for a non-leaf, the gradient is returned to the engine like any op's.
template <class T>
GradSink<T> make_sink(const Tensor<T>& w, bool direct) {
    GradSink<T> s;
    if (!needs_grad(w)) return s;
    if (direct && w.is_leaf()) {
        s.target = w;
        Tensor<T> cur = w.grad();
        if (cur.defined() && cur.is_contiguous() && cur.shape() == w.shape()) {
            s.data = cur.data();
            s.beta = T(1);
            return s;
        }
        if (cur.defined()) s.target = Tensor<T>();  // an odd existing .grad: let the engine add
    }
    s.fresh = Tensor<T>::empty(w.shape());
    s.data = s.fresh.data();
    return s;
}

/// Once filled: a fresh gradient of a leaf in direct mode becomes its .grad; else it is returned.
template <class T>
Tensor<T> finish_sink(GradSink<T>& s) {
    if (!s.active()) return Tensor<T>();
    if (s.target.defined()) {
        if (s.fresh.defined()) s.target.set_grad(s.fresh);
        return Tensor<T>();
    }
    return s.fresh;
}

inline bool& direct_leaf_grads_setting() {
    static bool on = true;
    return on;
}
}  // namespace detail

/// When on (the default), expert_ffn accumulates the gradients of leaf weights straight into their
/// .grad; off, it returns them to the autograd engine as every op does. Same values either way.
inline void set_direct_leaf_grads(bool on) { detail::direct_leaf_grads_setting() = on; }

}  // namespace moekd::moe

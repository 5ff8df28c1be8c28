// node.hpp — one recorded op in the define-by-run graph, and `record()` that ops call.
//
// An op computes its output, then calls record(out, "name", {inputs...}, backward_closure).
// The closure maps the gradient of `out` to one gradient per input (an undefined Tensor where an
// input needs none). It is written right under the forward code in each op header. Closures must
// never capture `out` itself (that would be a reference cycle): capture `out.detach()`.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../core/tensor.hpp"
#include "grad_mode.hpp"

namespace moekd {

template <class T>
struct Node {
    using BackwardFn = std::function<std::vector<Tensor<T>>(const Tensor<T>& grad_out)>;
    const char* name = "";
    std::vector<Tensor<T>> inputs;  // the tensors the op read; gradients flow back to these
    BackwardFn backward;
    bool released = false;  // true once backward() freed this part of the graph
};

/// Attaches history to `out` when grad mode is on and any input requires grad. Returns `out`.
template <class T>
Tensor<T> record(Tensor<T> out, const char* name, std::vector<Tensor<T>> inputs,
                 typename Node<T>::BackwardFn fn) {
    if constexpr (!Floating<T>) {
        return out;
    } else {
        if (!GradMode::enabled()) return out;
        bool any = false;
        for (const auto& x : inputs) any = any || x.requires_grad();
        if (!any) return out;
        auto node = std::make_shared<Node<T>>();
        node->name = name;
        node->inputs = std::move(inputs);
        node->backward = std::move(fn);
        out.impl()->requires_grad = true;
        out.impl()->grad_fn = std::move(node);
        return out;
    }
}

/// True when the engine will want a gradient for `x` (saves work in backward closures).
template <class T>
bool needs_grad(const Tensor<T>& x) {
    return x.defined() && x.requires_grad();
}

}  // namespace moekd

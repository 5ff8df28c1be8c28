// engine.hpp — reverse-mode backward over the recorded graph.
//
// Topologically sorts the tensors reachable from the root through grad_fn->inputs, walks them
// root first, calls each node's closure, and sums the gradients that meet at a tensor.
// Leaves that require grad accumulate into .grad() across calls until zero_grad(); non-leaves
// keep theirs only after retain_grad(). Unless retain_graph is set, each node's saved tensors
// are freed as soon as it has run, so a second backward through them is a clear error.
#pragma once

#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "node.hpp"

namespace moekd {
namespace detail {

/// out = a + b on the device, all contiguous and of one shape.
template <class T>
void device_add(Tensor<T>& out, const Tensor<T>& a, const Tensor<T>& b) {
    MOEKD_CHECK(a.device() == b.device(), "backward: gradients on ", a.device(), " and ", b.device(),
                " meet (shape ", a.shape(), ")");
    if (out.numel() == 0) return;
    const Shape& st = out.strides();
    const Shape* strides[3] = {&st, &st, &st};
    const int64_t off[3] = {out.offset(), a.offset(), b.offset()};
    detail::device_entry(DeviceOps<T>::cuda().binary, "backward (gradient sum)", a.shape())(
        BinaryOp::Add, out.impl()->storage->data(), a.impl()->storage->data(), b.impl()->storage->data(),
        make_loop_plan(out.shape(), strides, off, "backward"));
}

/// a + b for same-shape tensors, a fresh contiguous result (no autograd).
template <class T>
Tensor<T> add_same_shape(const Tensor<T>& a, const Tensor<T>& b) {
    Tensor<T> ac = contiguous_data(a), bc = contiguous_data(b);
    Tensor<T> out = Tensor<T>::empty(a.shape(), a.device());
    if (a.device() != Device::CPU) {
        device_add(out, ac, bc);
        return out;
    }
    const T *pa = ac.data(), *pb = bc.data();
    T* po = out.data();
    for (int64_t i = 0, n = out.numel(); i < n; ++i) po[i] = pa[i] + pb[i];
    return out;
}

/// True when nothing but this handle sees g's memory: no other handle on its TensorImpl, no
/// other tensor (view, saved tensor, alias) on its storage. Such a gradient can be taken over or
/// updated in place.
template <class T>
bool exclusively_owned(const Tensor<T>& g) {
    return g.defined() && g.impl_ptr().use_count() == 1 && g.impl()->storage.use_count() == 1 && !g.requires_grad();
}

template <class T>
void accumulate_grad(TensorImpl<T>* t, const Tensor<T>& g) {
    if (!t->grad && exclusively_owned(g) && g.is_contiguous()) {  // take it over: no copy
        t->grad = g.impl_ptr();
        return;
    }
    if (!t->grad) {
        Tensor<T> own = Tensor<T>::empty(g.shape(), g.device());  // own buffer: g may alias another gradient
        copy_into(own, g);
        t->grad = own.impl_ptr();
    } else {
        Tensor<T> cur(t->grad);
        MOEKD_CHECK(cur.shape() == g.shape(), "backward: accumulated gradient of shape ", cur.shape(),
                    " meets a new one of shape ", g.shape());
        Tensor<T> gc = contiguous_data(g);
        if (cur.device() != Device::CPU || gc.device() != Device::CPU) {
            device_add(cur, cur, gc);  // elementwise in place: each output reads only its own inputs
            return;
        }
        T* p = cur.data();
        const T* q = gc.data();
        for (int64_t i = 0, n = cur.numel(); i < n; ++i) p[i] += q[i];
    }
}

template <class T>
void run_backward(const Tensor<T>& root, Tensor<T> grad, bool retain_graph) {
    MOEKD_CHECK(root.requires_grad(), "backward: the tensor of shape ", root.shape(),
                " does not require grad (no input of the ops that made it has requires_grad set)");
    if (!grad.defined()) {
        MOEKD_CHECK(root.numel() == 1, "backward: called on a non-scalar tensor of shape ", root.shape(),
                    " without a gradient. HINT: reduce it first (sum/mean) or pass backward(grad)");
        grad = Tensor<T>::ones(root.shape(), root.device());
    } else {
        MOEKD_CHECK(grad.shape() == root.shape(), "backward: gradient of shape ", grad.shape(),
                    " for a tensor of shape ", root.shape());
        MOEKD_CHECK(grad.device() == root.device(), "backward: gradient on ", grad.device(),
                    " for a tensor on ", root.device());
    }
    NoGrad no_grad;

    // Post-order DFS: every tensor comes after all tensors it was computed from.
    std::vector<TensorImpl<T>*> order;
    std::unordered_set<TensorImpl<T>*> seen;
    std::vector<std::pair<TensorImpl<T>*, size_t>> stack{{root.impl(), 0}};
    seen.insert(root.impl());
    while (!stack.empty()) {
        auto& [t, next] = stack.back();
        Node<T>* n = t->grad_fn.get();
        if (n && next < n->inputs.size()) {
            TensorImpl<T>* in = n->inputs[next++].impl();
            if (in && in->requires_grad && seen.insert(in).second) stack.push_back({in, 0});
            continue;
        }
        order.push_back(t);
        stack.pop_back();
    }

    std::unordered_map<TensorImpl<T>*, Tensor<T>> grads;
    std::vector<std::shared_ptr<Node<T>>> ran;
    grads.emplace(root.impl(), grad);
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
        TensorImpl<T>* t = *it;
        auto found = grads.find(t);
        if (found == grads.end()) continue;
        Tensor<T> g = std::move(found->second);
        grads.erase(found);
        if (!t->grad_fn) {
            accumulate_grad(t, g);
            continue;
        }
        if (t->retains_grad) accumulate_grad(t, g);
        Node<T>& n = *t->grad_fn;
        MOEKD_CHECK(!n.released, "backward: the graph through '", n.name, "' was already freed by an earlier ",
                    "backward(). HINT: pass retain_graph=true to the first backward()");
        std::vector<Tensor<T>> gs = n.backward(g);
        MOEKD_CHECK(gs.size() == n.inputs.size(), "backward of '", n.name, "' returned ", gs.size(),
                    " gradients for ", n.inputs.size(), " inputs");
        for (size_t i = 0; i < gs.size(); ++i) {
            const Tensor<T>& in = n.inputs[i];
            if (!in.requires_grad() || !gs[i].defined()) continue;
            MOEKD_CHECK(gs[i].shape() == in.shape(), "backward of '", n.name, "': gradient of shape ",
                        gs[i].shape(), " for input ", i, " of shape ", in.shape());
            auto [slot, fresh] = grads.try_emplace(in.impl(), std::move(gs[i]));
            if (!fresh) {
                Tensor<T>& acc = slot->second;
                if (exclusively_owned(acc) && acc.is_contiguous()) {  // in place: no new buffer
                    const Tensor<T> gc = contiguous_data(gs[i]);
                    if (acc.device() != Device::CPU) {
                        device_add(acc, acc, gc);
                        continue;
                    }
                    T* p = acc.data();
                    const T* q = gc.data();
                    for (int64_t j = 0, n = acc.numel(); j < n; ++j) p[j] += q[j];
                } else {
                    acc = add_same_shape(acc, gs[i]);
                }
            }
        }
        ran.push_back(t->grad_fn);
    }
    // Freed only now: a node's inputs keep alive tensors that `order` still points to.
    if (!retain_graph)
        for (auto& n : ran) {
            n->backward = nullptr;
            n->inputs.clear();
            n->released = true;
        }
}

}  // namespace detail

template <class T>
void Tensor<T>::backward(bool retain_graph) const {
    detail::run_backward(*this, Tensor<T>(), retain_graph);
}

template <class T>
void Tensor<T>::backward(const Tensor<T>& grad, bool retain_graph) const {
    detail::run_backward(*this, grad, retain_graph);
}

}  // namespace moekd

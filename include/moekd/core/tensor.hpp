// tensor.hpp — Tensor<T>: a handle on shared storage with shape, strides, offset and device,
// plus the autograd fields (requires_grad, grad, grad_fn).
//
// Copying a Tensor copies the handle (like torch.Tensor in Python): both copies are the same
// tensor with the same gradient. Views (reshape, transpose, narrow, expand ...) are new tensors
// that share the storage. This file holds the data-only parts; views, arithmetic and backward()
// that record autograd history are defined by the op headers (moekd/ops/*.hpp) and the engine
// (moekd/autograd/engine.hpp). Include <moekd/tensor.hpp> to get all of them.
#pragma once

#include <cmath>
#include <cstdint>
#include <iomanip>
#include <memory>
#include <ostream>
#include <sstream>
#include <vector>

#include "backend.hpp"
#include "device.hpp"
#include "dtype.hpp"
#include "error.hpp"
#include "random.hpp"
#include "shape.hpp"
#include "storage.hpp"
#include "strided.hpp"

namespace moekd {

template <class T> class Tensor;
template <class T> struct Node;

template <class T>
struct TensorImpl {
    std::shared_ptr<Storage<T>> storage;
    Shape shape;
    Shape strides;
    int64_t offset = 0;
    bool requires_grad = false;
    bool retains_grad = false;
    std::shared_ptr<TensorImpl<T>> grad;  // accumulated gradient (leaves, or retain_grad())
    std::shared_ptr<Node<T>> grad_fn;     // the op that made this tensor; null for leaves
};

template <class T>
class Tensor {
public:
    using value_type = T;

    Tensor() = default;  // an undefined tensor (no storage); `defined()` is false
    explicit Tensor(std::shared_ptr<TensorImpl<T>> impl) : impl_(std::move(impl)) {}

    // ---- factories -------------------------------------------------------------------------
    /// Uninitialised contiguous tensor.
    static Tensor empty(const Shape& shape, Device device = Device::CPU) {
        for (int64_t d : shape) MOEKD_CHECK(d >= 0, "empty: negative size in shape ", shape);
        auto impl = std::make_shared<TensorImpl<T>>();
        try {
            impl->storage = std::make_shared<Storage<T>>(static_cast<size_t>(moekd::numel(shape)), device);
        } catch (const OutOfMemoryError& e) {  // say which tensor: its shape names what was being built
            throw OutOfMemoryError(msg(e.what(), " [tensor of shape ", shape, "]"));
        }
        impl->shape = shape;
        impl->strides = contiguous_strides(shape);
        return Tensor(std::move(impl));
    }
    static Tensor full(const Shape& shape, T value, Device device = Device::CPU) {
        Tensor t = empty(shape, device);
        if (device == Device::CPU) std::fill_n(t.data(), t.numel(), value);
        else if (t.numel() > 0) detail::device_entry(DeviceOps<T>::cuda().fill, "full", shape)(t.data(), value, t.numel());
        return t;
    }
    static Tensor zeros(const Shape& shape, Device device = Device::CPU) { return full(shape, T(0), device); }
    static Tensor ones(const Shape& shape, Device device = Device::CPU) { return full(shape, T(1), device); }
    static Tensor scalar(T value) { return full(Shape{}, value); }
    /// 0, 1, ..., n-1 (or start, start+step, ... < end).
    static Tensor arange(T end) { return arange(T(0), end, T(1)); }
    static Tensor arange(T start, T end, T step) {
        MOEKD_CHECK(step != T(0), "arange: step must be non-zero");
        const double n = std::ceil((static_cast<double>(end) - static_cast<double>(start)) / static_cast<double>(step));
        Tensor t = empty(Shape{n > 0 ? static_cast<int64_t>(n) : 0});
        for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<T>(start + static_cast<T>(i) * step);
        return t;
    }
    /// Copies `values` (row-major) into a tensor of `shape` (1-D of values.size() by default).
    static Tensor from_vector(const std::vector<T>& values, Shape shape = {}) {
        if (shape.empty() && !values.empty()) shape = Shape{static_cast<int64_t>(values.size())};
        MOEKD_CHECK(moekd::numel(shape) == static_cast<int64_t>(values.size()), "from_vector: ",
                    values.size(), " values do not fill shape ", shape);
        Tensor t = empty(shape);
        std::copy(values.begin(), values.end(), t.data());
        return t;
    }
    /// Standard normal samples times `std` plus `mean`.
    static Tensor randn(const Shape& shape, Generator& gen = default_generator(), double mean = 0, double std = 1) {
        Tensor t = empty(shape);
        for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<T>(mean + std * gen.normal());
        return t;
    }
    /// Uniform samples in [lo, hi).
    static Tensor rand(const Shape& shape, Generator& gen = default_generator(), double lo = 0, double hi = 1) {
        Tensor t = empty(shape);
        for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<T>(lo + (hi - lo) * gen.uniform());
        return t;
    }
    /// Uniform integers in [lo, hi).
    static Tensor randint(int64_t lo, int64_t hi, const Shape& shape, Generator& gen = default_generator()) {
        MOEKD_CHECK(hi > lo, "randint: empty range [", lo, ", ", hi, ")");
        Tensor t = empty(shape);
        for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<T>(gen.randint(lo, hi));
        return t;
    }

    // ---- metadata ---------------------------------------------------------------------------
    bool defined() const { return static_cast<bool>(impl_); }
    const Shape& shape() const { return checked().shape; }
    const Shape& strides() const { return checked().strides; }
    int64_t offset() const { return checked().offset; }
    int64_t dim() const { return shape().rank(); }
    int64_t size(int64_t d) const { return shape()[normalize_dim(d, dim(), "size")]; }
    int64_t numel() const { return moekd::numel(shape()); }
    Device device() const { return checked().storage->device(); }
    bool is_contiguous() const {
        const auto& s = shape();
        const auto& st = strides();
        int64_t expect = 1;
        for (int64_t i = s.rank() - 1; i >= 0; --i) {
            if (s[i] != 1 && st[i] != expect) return false;
            expect *= s[i];
        }
        return true;
    }
    /// True when both handles are the very same tensor.
    bool is_same(const Tensor& o) const { return impl_ == o.impl_; }
    /// True when both tensors look at the same storage (a view and its base, say).
    bool shares_storage(const Tensor& o) const { return defined() && o.defined() && impl_->storage == o.impl_->storage; }
    TensorImpl<T>* impl() const { return impl_.get(); }
    const std::shared_ptr<TensorImpl<T>>& impl_ptr() const { return impl_; }

    // ---- raw element access (tests, printing, loaders) --------------------------------------
    T* data() { return checked().storage->data() + impl_->offset; }
    const T* data() const { return checked().storage->data() + impl_->offset; }
    T& at(const Shape& idx) { return data()[element_offset(idx)]; }
    const T& at(const Shape& idx) const { return data()[element_offset(idx)]; }
    T& at(std::initializer_list<int64_t> idx) { return at(Shape(idx)); }
    const T& at(std::initializer_list<int64_t> idx) const { return at(Shape(idx)); }
    /// The one element's value (copied from the device when the tensor is there, as torch's item()).
    T item() const {
        MOEKD_CHECK(numel() == 1, "item: tensor of shape ", shape(), " has ", numel(), " elements, not 1");
        if (device() != Device::CPU) return to(Device::CPU).item();
        return data()[0];
    }
    /// Elements in row-major order, whatever the strides (copied from the device if there).
    std::vector<T> to_vector() const {
        if (device() != Device::CPU) return to(Device::CPU).to_vector();
        std::vector<T> out;
        out.reserve(numel());
        const T* p = checked().storage->data();
        detail::strided_loop<1>(shape(), {&strides()}, {offset()}, [&](auto o) { out.push_back(p[o[0]]); });
        return out;
    }

    // ---- autograd fields (backward(), views and ops are defined in the op headers) -----------
    bool requires_grad() const { return defined() && impl_->requires_grad; }
    Tensor& requires_grad_(bool on = true) {
        MOEKD_CHECK(!on || is_leaf(), "requires_grad_: only a leaf tensor can be switched; this one was made by ",
                    "an op (use detach() first)");
        MOEKD_CHECK(!on || Floating<T>, "requires_grad_: ", dtype_name<T>(), " tensors carry no gradients");
        checked().requires_grad = on;
        return *this;
    }
    bool is_leaf() const { return !checked().grad_fn; }
    const std::shared_ptr<Node<T>>& grad_fn() const { return checked().grad_fn; }
    /// The accumulated gradient, or an undefined tensor before any backward().
    Tensor grad() const { return Tensor(checked().grad); }
    /// Sets the gradient to none (the next backward() starts from zero).
    void zero_grad() { checked().grad.reset(); }
    void set_grad(const Tensor& g) { checked().grad = g.impl_; }
    /// Keep the gradient of this non-leaf tensor after backward (read it with grad()).
    void retain_grad() { checked().retains_grad = true; }
    bool retains_grad() const { return checked().retains_grad; }

    /// A tensor sharing storage with this one but with no history (gradients stop here).
    Tensor detach() const {
        auto impl = std::make_shared<TensorImpl<T>>();
        impl->storage = checked().storage;
        impl->shape = impl_->shape;
        impl->strides = impl_->strides;
        impl->offset = impl_->offset;
        return Tensor(std::move(impl));
    }

    /// This tensor on `device`: itself if it is there, else a contiguous copy. A data move, not
    /// an op: the copy has no history (PyTorch's .to() records one).
    Tensor to(Device device) const;

    // Declared here, defined in moekd/autograd/engine.hpp:
    void backward(bool retain_graph = false) const;
    void backward(const Tensor& grad, bool retain_graph = false) const;

    // Declared here, defined in moekd/ops/view.hpp (all record autograd history):
    Tensor view(const Shape& shape) const;
    Tensor reshape(const Shape& shape) const;
    Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
    Tensor transpose(int64_t d0, int64_t d1) const;
    Tensor t() const { return dim() < 2 ? *this : transpose(0, 1); }  // 0-D and 1-D: itself, as torch
    Tensor permute(const Shape& dims) const;
    Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
    Tensor slice(int64_t dim, int64_t start, int64_t end) const;
    Tensor select(int64_t dim, int64_t index) const;
    Tensor expand(const Shape& shape) const;
    Tensor squeeze(int64_t dim) const;
    Tensor unsqueeze(int64_t dim) const;
    Tensor contiguous() const;
    Tensor clone() const;

private:
    TensorImpl<T>& checked() const {
        MOEKD_CHECK(impl_, "use of an undefined tensor (default-constructed, or a grad() before backward())");
        return *impl_;
    }
    void cpu_only(const char* op) const {
        MOEKD_CHECK(device() == Device::CPU, op, ": tensor is on ", device(), "; copy it to the CPU first");
    }
    int64_t element_offset(const Shape& idx) const {
        cpu_only("at");
        MOEKD_CHECK(idx.rank() == dim(), "at: index of rank ", idx.rank(), " for a tensor of shape ", shape());
        int64_t o = 0;
        for (int64_t i = 0; i < dim(); ++i) {
            int64_t j = idx[i] < 0 ? idx[i] + shape()[i] : idx[i];
            MOEKD_CHECK(j >= 0 && j < shape()[i], "at: index ", idx, " out of range for shape ", shape());
            o += j * strides()[i];
        }
        return o;
    }
    std::shared_ptr<TensorImpl<T>> impl_;
};

using FloatTensor = Tensor<float>;
using DoubleTensor = Tensor<double>;
using IndexTensor = Tensor<int64_t>;

namespace detail {

/// A view of `base`'s storage with the given geometry and no history. Checks the geometry stays
/// inside the storage, so a wrong view is an error, never an out-of-bounds read.
template <class T>
Tensor<T> as_strided(const Tensor<T>& base, const Shape& shape, const Shape& strides, int64_t offset) {
    auto impl = std::make_shared<TensorImpl<T>>();
    impl->storage = base.impl()->storage;
    impl->shape = shape;
    impl->strides = strides;
    impl->offset = offset;
    int64_t lo = offset, hi = offset;
    bool empty = false;
    for (int64_t i = 0; i < shape.rank(); ++i) {
        if (shape[i] == 0) empty = true;
        int64_t span = (shape[i] - 1) * strides[i];
        (span < 0 ? lo : hi) += span;
    }
    MOEKD_CHECK(empty || (lo >= 0 && hi < static_cast<int64_t>(impl->storage->size())),
                "as_strided: view of shape ", shape, " strides ", strides, " offset ", offset,
                " reaches outside a storage of ", impl->storage->size(), " elements");
    return Tensor<T>(std::move(impl));
}

/// dst[...] = src[...] elementwise (same shape; any strides; no autograd).
template <class T, class U>
void copy_into(Tensor<T>& dst, const Tensor<U>& src) {
    MOEKD_CHECK(dst.shape() == src.shape(), "copy: destination shape ", dst.shape(), " vs source ", src.shape());
    if (dst.device() != Device::CPU || src.device() != Device::CPU) {
        MOEKD_CHECK(dst.device() == src.device(), "copy: destination on ", dst.device(), ", source on ", src.device(),
                    " (move tensors between devices with .to(device))");
        if constexpr (std::is_same_v<T, U>) {
            if (dst.numel() == 0) return;
            const Shape* st[3] = {&dst.strides(), &src.strides(), nullptr};
            const int64_t off[3] = {dst.offset(), src.offset(), 0};
            detail::device_entry(DeviceOps<T>::cuda().copy, "copy", dst.shape())(
                dst.impl()->storage->data(), src.impl()->storage->data(), make_loop_plan(dst.shape(), st, off, "copy"));
        } else {
            MOEKD_CHECK(false, "copy: converting ", dtype_name<U>(), " to ", dtype_name<T>(), " on ", dst.device(),
                        " has no device implementation yet (convert on the CPU)");
        }
        return;
    }
    T* d = dst.impl()->storage->data();
    const U* s = src.impl()->storage->data();
    if (dst.is_contiguous() && src.is_contiguous()) {
        T* dp = dst.data();
        const U* sp = src.data();
        for (int64_t i = 0, n = dst.numel(); i < n; ++i) dp[i] = static_cast<T>(sp[i]);
        return;
    }
    detail::strided_loop<2>(dst.shape(), {&dst.strides(), &src.strides()}, {dst.offset(), src.offset()},
                            [&](auto o) { d[o[0]] = static_cast<T>(s[o[1]]); });
}

/// A contiguous copy (or the tensor itself if already contiguous), without autograd.
template <class T>
Tensor<T> contiguous_data(const Tensor<T>& x) {
    if (x.is_contiguous()) return x;
    Tensor<T> out = Tensor<T>::empty(x.shape(), x.device());
    copy_into(out, x);
    return out;
}

}  // namespace detail

template <class T>
Tensor<T> Tensor<T>::to(Device target) const {
    if (device() == target) return *this;
    const Tensor<T> src = detail::contiguous_data(*this);
    Tensor<T> out = Tensor<T>::empty(shape(), target);
    if (out.numel() == 0) return out;
    auto& h = DeviceCopyHooks::cuda();
    const size_t bytes = sizeof(T) * static_cast<size_t>(out.numel());
    if (target == Device::CPU)
        detail::device_entry(h.to_host, "to", shape())(out.data(), src.data(), bytes);
    else
        detail::device_entry(h.to_device, "to", shape())(out.data(), src.data(), bytes);
    return out;
}

/// Converts element type (no autograd): `cast<double>(float_tensor)`.
template <class U, class T>
Tensor<U> cast(const Tensor<T>& x) {
    Tensor<U> out = Tensor<U>::empty(x.shape());
    detail::copy_into(out, x);
    return out;
}

/// Prints shape, dtype and (up to 6 per dimension) values, PyTorch style.
template <class T>
std::ostream& operator<<(std::ostream& os, const Tensor<T>& t) {
    if (!t.defined()) return os << "tensor(undefined)";
    os << "tensor(shape=" << t.shape() << ", dtype=" << dtype_name<T>() << ", device=" << t.device();
    if (t.requires_grad()) os << ", requires_grad";
    os << ")";
    if (t.device() != Device::CPU) return os;
    std::vector<T> v = t.to_vector();
    const Shape& s = t.shape();
    std::ostringstream body;
    body << std::setprecision(6);
    // recursive printer over dims, eliding the middle of long dims
    auto rec = [&](auto&& self, int64_t d, int64_t base) -> void {
        if (d == s.rank()) {
            if constexpr (std::is_floating_point_v<T> || std::is_integral_v<T>) body << +v[base];
            return;
        }
        int64_t stride = 1;
        for (int64_t k = d + 1; k < s.rank(); ++k) stride *= s[k];
        body << '[';
        for (int64_t i = 0; i < s[d]; ++i) {
            if (s[d] > 6 && i == 3) {
                body << "..., ";
                i = s[d] - 3;
            }
            self(self, d + 1, base + i * stride);
            if (i + 1 < s[d]) body << ", ";
        }
        body << ']';
    };
    if (!v.empty() || s.rank() == 0) {
        rec(rec, 0, 0);
        os << '\n' << body.str();
    }
    return os;
}

}  // namespace moekd

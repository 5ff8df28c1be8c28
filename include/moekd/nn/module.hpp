// module.hpp — nn::Module: a tree of named submodules, parameters and buffers.
//
// Names are dotted paths built from registration names, stable across runs, so checkpoints are
// readable by other tools: `encoder.layers.3.self_attn.q_proj.weight`. Parameters are Tensor
// handles: a layer keeps its own handle (`weight`) and the module tree keeps the same one, so
// loading a state dict (which copies values in place) updates both.
//
// Forward hooks: a module calls `emit("tag", tensor)` at the points worth observing (every
// module emits "output"; attention also emits per-head "q" and "k", Transformer layers their
// sublayer outputs). Outside code registers a hook on any module to read those tensors; they
// carry autograd history, so a hook may keep them and put a loss on them (TCD does).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "../tensor.hpp"

namespace moekd::nn {

/// What load_state_dict found wrong; empty lists mean a clean load.
struct LoadReport {
    std::vector<std::string> missing;     // in the module, not in the dict
    std::vector<std::string> unexpected;  // in the dict, not in the module
    std::vector<std::string> mismatched;  // "name: module (a, b) vs dict (c, d)"
    bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
    std::string str() const {
        std::ostringstream os;
        auto list = [&](const char* what, const std::vector<std::string>& v) {
            if (v.empty()) return;
            os << what << " (" << v.size() << "):";
            for (const auto& s : v) os << "\n  " << s;
            os << "\n";
        };
        list("missing keys", missing);
        list("unexpected keys", unexpected);
        list("shape mismatches", mismatched);
        return os.str();
    }
};

template <class T = float>
class Module : public std::enable_shared_from_this<Module<T>> {
public:
    using Hook = std::function<void(const std::string& tag, const Tensor<T>& value)>;
    using StateDict = std::map<std::string, Tensor<T>>;

    virtual ~Module() = default;
    Module() = default;
    Module(const Module&) = delete;
    Module& operator=(const Module&) = delete;

    // ---- tree -------------------------------------------------------------------------------
    /// Registers a parameter (a leaf that requires grad unless told otherwise) and returns it.
    Tensor<T> register_parameter(const std::string& name, Tensor<T> t, bool requires_grad = true) {
        check_new_name(name);
        MOEKD_CHECK(t.defined() && t.is_leaf(), "register_parameter: '", name, "' must be a defined leaf tensor");
        if (requires_grad && !t.requires_grad()) t.requires_grad_();
        params_.emplace_back(name, t);
        return t;
    }
    /// Registers a buffer: saved in the state dict, never trained (e.g. running statistics).
    Tensor<T> register_buffer(const std::string& name, Tensor<T> t) {
        check_new_name(name);
        buffers_.emplace_back(name, t);
        return t;
    }
    /// Registers a submodule and returns it, typed.
    template <class M>
    std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
        check_new_name(name);
        MOEKD_CHECK(m, "register_module: '", name, "' is null");
        children_.emplace_back(name, m);
        return m;
    }
    /// Shares an already registered parameter under another name (tied weights, shared layers).
    /// state_dict() lists it under every name; parameters() lists it once.
    void share_parameter(const std::string& name, const Tensor<T>& t) {
        check_new_name(name);
        params_.emplace_back(name, t);
    }

    std::vector<std::pair<std::string, Tensor<T>>> named_parameters() const {
        std::vector<std::pair<std::string, Tensor<T>>> out;
        collect(
            "", [&](const std::string& n, const Tensor<T>& t) { out.emplace_back(n, t); }, false);
        return out;
    }
    /// Each distinct parameter once (shared ones are not repeated), in registration order.
    std::vector<Tensor<T>> parameters() const {
        std::vector<Tensor<T>> out;
        std::vector<const TensorImpl<T>*> seen;
        for (auto& [n, t] : named_parameters()) {
            if (std::find(seen.begin(), seen.end(), t.impl()) != seen.end()) continue;
            seen.push_back(t.impl());
            out.push_back(t);
        }
        return out;
    }
    std::vector<std::pair<std::string, std::shared_ptr<Module<T>>>> named_modules() {
        std::vector<std::pair<std::string, std::shared_ptr<Module<T>>>> out;
        walk_modules("", out);
        return out;
    }
    /// The submodule at a dotted path ("encoder.layers.3"); an error names the missing step.
    std::shared_ptr<Module<T>> submodule(const std::string& path) {
        for (auto& [n, m] : named_modules())
            if (n == path) return m;
        MOEKD_CHECK(false, "submodule: no module named '", path, "'");
        return nullptr;
    }
    int64_t num_parameters() const {
        int64_t n = 0;
        for (auto& t : parameters()) n += t.numel();
        return n;
    }

    // ---- state ------------------------------------------------------------------------------
    /// Parameters and buffers by dotted name (handles, not copies).
    StateDict state_dict() const {
        StateDict out;
        collect("", [&](const std::string& n, const Tensor<T>& t) { out[n] = t; }, true);
        return out;
    }
    /// Copies values in. strict: any missing, unexpected or mis-shaped name is an error that
    /// lists every offender with both shapes, and nothing is changed. Non-strict: loads what
    /// matches and returns the report.
    LoadReport load_state_dict(const StateDict& dict, bool strict = true) {
        LoadReport rep;
        StateDict mine = state_dict();
        for (auto& [n, t] : mine) {
            auto it = dict.find(n);
            if (it == dict.end()) rep.missing.push_back(n);
            else if (it->second.shape() != t.shape())
                rep.mismatched.push_back(msg(n, ": module ", t.shape(), " vs dict ", it->second.shape()));
        }
        for (auto& [n, t] : dict)
            if (!mine.count(n)) rep.unexpected.push_back(n + " " + msg(t.shape()));
        MOEKD_CHECK(!strict || rep.ok(), "load_state_dict (strict): the state dict does not fit the module\n", rep.str());
        NoGrad ng;
        for (auto& [n, t] : mine) {
            auto it = dict.find(n);
            if (it == dict.end() || it->second.shape() != t.shape()) continue;
            detail::copy_into(t, it->second.to(t.device()));  // a CPU dict loads into a device module
        }
        return rep;
    }

    /// Moves every parameter and buffer to `device` in place: each tensor keeps its identity
    /// (the module's members, parameters() and shared weights all see the move), its values and
    /// requires_grad; its gradient moves with it. Build optimizers after the move, as in PyTorch.
    Module& to(Device device) {
        std::vector<TensorImpl<T>*> seen;
        collect(
            "",
            [&](const std::string&, const Tensor<T>& t) {
                TensorImpl<T>* impl = t.impl();
                if (std::find(seen.begin(), seen.end(), impl) != seen.end() || t.device() == device) return;
                seen.push_back(impl);
                const Tensor<T> moved = t.detach().to(device);
                impl->storage = moved.impl()->storage;
                impl->strides = moved.strides();
                impl->offset = 0;
                if (impl->grad) impl->grad = Tensor<T>(impl->grad).to(device).impl_ptr();
            },
            true);
        return *this;
    }
    /// The device of the first parameter (CPU for a module without any).
    Device device() const {
        const auto ps = parameters();
        return ps.empty() ? Device::CPU : ps.front().device();
    }

    // ---- modes ------------------------------------------------------------------------------
    void train(bool on = true) {
        training_ = on;
        for (auto& [n, c] : children_) c->train(on);
    }
    void eval() { train(false); }
    bool is_training() const { return training_; }
    /// Stops (or restarts) training of every parameter below this module.
    void freeze(bool frozen = true) {
        for (auto& t : parameters()) t.impl()->requires_grad = !frozen;
    }
    void zero_grad() {
        for (auto& t : parameters()) t.zero_grad();
    }

    // ---- hooks ------------------------------------------------------------------------------
    int add_forward_hook(Hook h) {
        hooks_.emplace_back(next_hook_id_, std::move(h));
        return next_hook_id_++;
    }
    void remove_forward_hook(int id) {
        std::erase_if(hooks_, [id](const auto& p) { return p.first == id; });
    }
    bool has_hooks() const { return !hooks_.empty(); }

protected:
    /// Hands `value` to this module's hooks under `tag`. Cheap when no hook is registered.
    void emit(const std::string& tag, const Tensor<T>& value) const {
        for (auto& [id, h] : hooks_) h(tag, value);
    }

private:
    void check_new_name(const std::string& name) const {
        MOEKD_CHECK(!name.empty() && name.find('.') == std::string::npos, "Module: bad name '", name,
                    "' (names are non-empty and contain no '.')");
        auto taken = [&](const auto& v) {
            for (auto& p : v)
                if (p.first == name) return true;
            return false;
        };
        MOEKD_CHECK(!taken(params_) && !taken(buffers_) && !taken(children_), "Module: name '", name,
                    "' is registered twice");
    }
    template <class F>
    void collect(const std::string& prefix, F&& f, bool with_buffers) const {
        for (auto& [n, t] : params_) f(prefix + n, t);
        if (with_buffers)
            for (auto& [n, t] : buffers_) f(prefix + n, t);
        for (auto& [n, c] : children_) c->collect(prefix + n + ".", f, with_buffers);
    }
    void walk_modules(const std::string& prefix, std::vector<std::pair<std::string, std::shared_ptr<Module<T>>>>& out) {
        for (auto& [n, c] : children_) {
            out.emplace_back(prefix + n, c);
            c->walk_modules(prefix + n + ".", out);
        }
    }

    std::vector<std::pair<std::string, Tensor<T>>> params_, buffers_;
    std::vector<std::pair<std::string, std::shared_ptr<Module<T>>>> children_;
    std::vector<std::pair<int, Hook>> hooks_;
    int next_hook_id_ = 0;
    bool training_ = true;
};

/// A list of modules registered as "0", "1", ... (like torch.nn.ModuleList).
template <class M, class T = float>
class ModuleList : public Module<T> {
public:
    std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
        items_.push_back(this->register_module(std::to_string(items_.size()), std::move(m)));
        return items_.back();
    }
    size_t size() const { return items_.size(); }
    M& operator[](size_t i) { return *items_.at(i); }
    const M& operator[](size_t i) const { return *items_.at(i); }
    std::shared_ptr<M> ptr(size_t i) const { return items_.at(i); }
    auto begin() { return items_.begin(); }
    auto end() { return items_.end(); }

private:
    std::vector<std::shared_ptr<M>> items_;
};

}  // namespace moekd::nn

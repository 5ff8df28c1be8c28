// train.hpp — the TSJT training rule, independent of data and I/O so the tests can drive it:
//
//   stage 1 (TSJT, and ConstJT throughout):
//     L = CE(y_moe) + aux + alpha_moe * KL_sym(y_moe || y_dense')      (gradient to the MoE side)
//       + CE(y_dense) + alpha_dense * KL_sym(y_moe' || y_dense)         (gradient to the dense side)
//     (' = held fixed: symmetric_kl's detach flags). One backward and one Adam step: with the
//     shared architecture the shared layers get both models' gradients in the same step; with
//     the indep architecture the parameter sets are disjoint and Adam is per-parameter, so this
//     is the paper's "optimize the MoE submodel first, followed by the dense or device submodel"
//     (l.68) when the small model's KL sees the MoE logits from before the MoE update, which is
//     our reading: the paper does not say which MoE output the second update sees.
//   stage 2 (TSJT after the switch, and Single throughout): L = CE + aux + CE (no KL).
//
// StageController decides the switch from the KL of each update:
//   fixed t_sep   switch once the mean KL over the last `window` updates is <= t_sep;
//   auto          every `window` updates take the window's mean KL m_k; once
//                 (m_{k-1} - m_k) / m_{k-1} < auto_rel for `patience` windows in a row (the KL
//                 has stopped improving), switch; t_sep := m_k. This rule is our own: the paper
//                 switches at a fixed threshold (Eq. 1, l.62-66) found by grid search (l.659).
//                 Never before min_steps (the warmup: the KL first rises as both models learn).
#pragma once

#include <cmath>
#include <deque>
#include <limits>
#include <map>
#include <sstream>
#include <string>

#include <moekd/losses/kd.hpp>
#include <moekd/ops/loss.hpp>

#include "batch.hpp"
#include "model.hpp"

namespace tsjt {

enum class Mode { single, constjt, tsjt };
inline const char* mode_name(Mode m) { return m == Mode::single ? "single" : m == Mode::constjt ? "constjt" : "tsjt"; }
inline Mode parse_mode(const std::string& s) {
    if (s == "single") return Mode::single;
    if (s == "constjt") return Mode::constjt;
    if (s == "tsjt") return Mode::tsjt;
    MOEKD_CHECK(false, "tsjt: unknown mode '", s, "' (single, constjt, tsjt)");
    return Mode::tsjt;
}

class StageController {
public:
    /// t_sep < 0 means automatic.
    StageController(Mode mode, double t_sep, int window, int64_t min_steps, double auto_rel = 0.05, int patience = 2)
        : mode_(mode), t_sep_(t_sep), window_(window), min_steps_(min_steps), auto_rel_(auto_rel), patience_(patience) {
        MOEKD_CHECK(window >= 1, "tsjt: --kl-window must be >= 1, got ", window);
        MOEKD_CHECK(patience >= 1 && auto_rel > 0, "tsjt: auto t_sep needs patience >= 1 and auto_rel > 0");
        stage_ = mode == Mode::single ? 2 : 1;
    }
    /// Whether the next update uses the KL term.
    bool use_kl() const { return stage_ == 1; }
    int stage() const { return stage_; }
    int64_t switch_step() const { return switch_step_; }
    /// The threshold in use: the fixed one, or (auto) the window mean at the switch (NaN before).
    double t_sep() const { return t_sep_; }
    bool automatic() const { return auto_; }
    /// The window mean KL that triggered the switch (NaN before it; not checkpointed: for messages).
    double switch_mean() const { return switch_mean_; }

    /// Records the KL of update `step` (1-based); returns true when this update switches to stage 2.
    bool observe(int64_t step, double kl) {
        if (mode_ != Mode::tsjt || stage_ == 2) return false;
        recent_.push_back(kl);
        if (int(recent_.size()) > window_) recent_.pop_front();
        if (int(recent_.size()) < window_ || step < min_steps_) return false;
        double m = 0;
        for (double v : recent_) m += v;
        m /= double(recent_.size());
        if (!auto_) {
            if (m <= t_sep_) return do_switch(step, m);
            return false;
        }
        if (++since_window_ < window_ && !std::isnan(prev_mean_)) return false;
        since_window_ = 0;
        if (!std::isnan(prev_mean_)) {
            const double rel = (prev_mean_ - m) / std::max(prev_mean_, 1e-12);
            flat_ = rel < auto_rel_ ? flat_ + 1 : 0;
        }
        prev_mean_ = m;
        if (flat_ >= patience_) return do_switch(step, m);
        return false;
    }

    /// State for checkpoints (and its inverse).
    std::map<std::string, std::string> save() const {
        std::ostringstream w;
        w.precision(17);
        for (double v : recent_) w << v << ' ';
        auto num = [](double v) {
            std::ostringstream o;
            o.precision(17);
            o << v;
            return o.str();
        };
        return {{"stage", std::to_string(stage_)}, {"switch_step", std::to_string(switch_step_)},
                {"t_sep", num(t_sep_)},           {"prev_mean", num(prev_mean_)},
                {"flat", std::to_string(flat_)},   {"since_window", std::to_string(since_window_)},
                {"recent", w.str()}};
    }
    void load(const std::map<std::string, std::string>& s) {
        auto get = [&](const char* k) {
            auto it = s.find(std::string("stage.") + k);
            MOEKD_CHECK(it != s.end(), "tsjt: checkpoint lacks the stage state '", k, "'");
            return it->second;
        };
        stage_ = std::stoi(get("stage"));
        switch_step_ = std::stoll(get("switch_step"));
        t_sep_ = std::stod(get("t_sep"));
        prev_mean_ = std::stod(get("prev_mean"));
        flat_ = std::stoi(get("flat"));
        since_window_ = std::stoi(get("since_window"));
        recent_.clear();
        std::istringstream r(get("recent"));
        for (double v; r >> v;) recent_.push_back(v);
    }

private:
    bool do_switch(int64_t step, double m) {
        stage_ = 2;
        switch_step_ = step;
        switch_mean_ = m;
        if (auto_) t_sep_ = m;
        return true;
    }
    Mode mode_;
    double t_sep_;
    bool auto_ = t_sep_ < 0;
    int window_;
    int64_t min_steps_;
    double auto_rel_;
    int patience_;
    int stage_ = 1;
    int64_t switch_step_ = -1;
    std::deque<double> recent_;
    double prev_mean_ = std::numeric_limits<double>::quiet_NaN();
    double switch_mean_ = std::numeric_limits<double>::quiet_NaN();
    int flat_ = 0, since_window_ = 0;
};

/// The losses of one batch for both submodels.
struct JointLoss {
    Tensor<F> total;              // what backward() runs on
    double ce_moe = 0, ce_dense = 0, kl = 0, aux = 0;
};

/// Forward of both submodels on one batch and the TSJT loss (see the top of this file).
inline JointLoss joint_loss(const Sub& moe_m, const Sub& dense, const Batch& b, bool use_kl, double alpha_moe,
                            double alpha_dense, double label_smoothing) {
    const nn::AuxOutput<F> oa = moe_m.forward_with_aux(b.src, b.prev), ob = dense.forward_with_aux(b.src, b.prev);
    const Tensor<F>& la = oa.y;  // (B, T, V)
    const Tensor<F>& lb = ob.y;
    const int64_t pad = moe_m.pad;
    const Tensor<F> ce_a = cross_entropy(la, b.tgt, pad, label_smoothing);
    const Tensor<F> ce_b = cross_entropy(lb, b.tgt, pad, label_smoothing);
    JointLoss out;
    out.ce_moe = ce_a.item();
    out.ce_dense = ce_b.item();
    const Tensor<F> aux = nn::add_aux(oa.aux, ob.aux);  // undefined when neither model has MoE layers
    out.aux = aux.defined() ? double(aux.item()) : 0.0;
    out.total = nn::add_aux(ce_a + ce_b, aux);
    if (use_kl) {
        const Tensor<F> kl_a = symmetric_kl(la, lb, b.tgt_pad, /*detach_a=*/false, /*detach_b=*/true);
        const Tensor<F> kl_b = symmetric_kl(la, lb, b.tgt_pad, /*detach_a=*/true, /*detach_b=*/false);
        out.kl = kl_a.item();
        out.total = out.total + kl_a * F(alpha_moe) + kl_b * F(alpha_dense);
    } else {
        NoGrad ng;
        out.kl = symmetric_kl(la.detach(), lb.detach(), b.tgt_pad).item();
    }
    return out;
}

}  // namespace tsjt

// tsjt.hpp — TSJT, two-stage joint training of multiple capacity models ("One-stop Training of
// Multiple Capacity Models", Jiang et al.; text in ../shared/papers/): an MoE model and a small
// model (a dense model that shares layers with it, or an independent "device" model) trained in
// one run, with a symmetric KL between their outputs in stage 1, dropped once the KL falls under
// a threshold t_sep (stage 2). What a trainer needs, and nothing of data or I/O:
//
//   Mode              single (never KL), constjt (KL throughout), tsjt (KL until the switch)
//   StageController   decides the switch from each update's KL; fixed or automatic t_sep;
//                     its state goes into a checkpoint (save / load)
//   joint_loss        stage 1:  CE(y_moe) + aux + alpha_moe * KL_sym(y_moe || y_dense')
//                             + CE(y_dense) + alpha_dense * KL_sym(y_moe' || y_dense)
//                     (' = held fixed), stage 2: CE + aux + CE; one backward for both models
//   SharedDense       the shared-architecture dense model of an nn::EncoderDecoder MoE model
//                     (its layers 0, 2, 4, ... ARE the MoE model's standard layers)
//   unique_parameters the parameters of several modules, each shared tensor once (the optimizer's list)
//
// Usage (lines of the complete program in docs/methods.md, which the tests build and run; tests/docs
// checks that every line below is in it):
//
//   tsjt::SharedDense<float> dense(moe_model, /*enc_layers=*/2, /*dec_layers=*/2, gen);
//   optim::Adam<float> opt({{tsjt::unique_parameters<float>({&moe_model, &dense}), 1e-2}});
//   tsjt::StageController stage(tsjt::Mode::tsjt, /*t_sep=*/0.05, /*window=*/5, /*min_steps=*/50);
//   for (int64_t step = 1; step <= 100; ++step) {  // a copy task: the target is the source
//   // ...
//       const auto a = moe_model.forward_with_aux(src, prev), d = dense.forward_with_aux(src, prev);
//       const tsjt::JointLoss<float> l = tsjt::joint_loss(a, d, src, c.padding_idx, stage.use_kl(), 5.0, 10.0);
//       opt.zero_grad();
//       l.total.backward();
//       opt.step();
//       if (stage.observe(step, l.kl)) std::printf("stage 2 from update %lld\n", (long long)step);
//   }
#pragma once

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "../losses/kd.hpp"
#include "../moe/moe_layer.hpp"
#include "../nn/transformer.hpp"
#include "../ops/loss.hpp"

namespace moekd::tsjt {

/// The three training modes the paper compares: Single (each model alone, no KL), ConstJT (KL
/// throughout) and TSJT (KL in stage 1 only).
enum class Mode { single, constjt, tsjt };
inline const char* mode_name(Mode m) { return m == Mode::single ? "single" : m == Mode::constjt ? "constjt" : "tsjt"; }
inline Mode parse_mode(const std::string& s) {
    if (s == "single") return Mode::single;
    if (s == "constjt") return Mode::constjt;
    if (s == "tsjt") return Mode::tsjt;
    MOEKD_CHECK(false, "tsjt: unknown mode '", s, "' (single, constjt, tsjt)");
    return Mode::tsjt;
}

/// The stage switch, from the KL of each update:
///   fixed t_sep   switch once the mean KL over the last `window` updates is <= t_sep (the
///                 paper's rule, eq. 1, with t_sep found by grid search);
///   auto (t_sep < 0)  every `window` updates take the window's mean KL m_k; once
///                 (m_{k-1} - m_k) / m_{k-1} < auto_rel for `patience` windows in a row (the KL
///                 has stopped improving), switch; t_sep := m_k. This rule is moekd's own.
/// Never before min_steps (a warmup: the KL first rises as both models learn).
class StageController {
public:
    StageController(Mode mode, double t_sep, int window, int64_t min_steps, double auto_rel = 0.05, int patience = 2)
        : mode_(mode), t_sep_(t_sep), window_(window), min_steps_(min_steps), auto_rel_(auto_rel), patience_(patience) {
        MOEKD_CHECK(window >= 1, "tsjt: the KL window must be >= 1, got ", window);
        MOEKD_CHECK(patience >= 1 && auto_rel > 0, "tsjt: auto t_sep needs patience >= 1 and auto_rel > 0");
        stage_ = mode == Mode::single ? 2 : 1;
    }
    /// Whether the next update uses the KL term.
    bool use_kl() const { return stage_ == 1; }
    int stage() const { return stage_; }
    Mode mode() const { return mode_; }
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

    /// State for a checkpoint's metadata (keys without the "stage." prefix load() expects).
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
    /// Restores save()'s state, read from keys "stage.<name>".
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

/// The losses of one batch for both models.
template <class T>
struct JointLoss {
    Tensor<T> total;  // what backward() runs on
    double ce_moe = 0, ce_dense = 0, kl = 0, aux = 0;
};

/// The TSJT loss of one batch from both models' outputs: logits (B, T, V) and their aux losses
/// (undefined for a model without MoE layers). target: (B, T) ids, `pad` ignored; target_pad:
/// (B, T), 1 = padding (the KL's mask). The KL term's two halves are the same symmetric KL with
/// one side held fixed each (symmetric_kl's detach flags): alpha_moe's half trains the MoE model,
/// alpha_dense's the dense one. Without the KL term (stage 2) the KL is still measured, without
/// gradient, so a trainer can log it. Same value for a logit pair on any device.
template <class T>
JointLoss<T> joint_loss(const nn::AuxOutput<T>& moe_out, const nn::AuxOutput<T>& dense_out, const Tensor<int64_t>& target,
                        const Tensor<uint8_t>& target_pad, int64_t pad, bool use_kl, double alpha_moe,
                        double alpha_dense, double label_smoothing = 0.0) {
    const Tensor<T>& la = moe_out.y;
    const Tensor<T>& lb = dense_out.y;
    MOEKD_CHECK(la.defined() && lb.defined() && la.shape() == lb.shape(), "tsjt::joint_loss: the MoE logits ",
                la.defined() ? la.shape() : Shape{}, " and the dense logits ", lb.defined() ? lb.shape() : Shape{},
                " must have the same shape (one joint vocabulary)");
    const Tensor<T> ce_a = cross_entropy(la, target, pad, label_smoothing);
    const Tensor<T> ce_b = cross_entropy(lb, target, pad, label_smoothing);
    JointLoss<T> out;
    out.ce_moe = ce_a.item();
    out.ce_dense = ce_b.item();
    const Tensor<T> aux = nn::add_aux(moe_out.aux, dense_out.aux);  // undefined when neither has MoE layers
    out.aux = aux.defined() ? double(aux.item()) : 0.0;
    out.total = nn::add_aux(ce_a + ce_b, aux);
    if (use_kl) {
        const Tensor<T> kl_a = symmetric_kl(la, lb, target_pad, /*detach_a=*/false, /*detach_b=*/true);
        const Tensor<T> kl_b = symmetric_kl(la, lb, target_pad, /*detach_a=*/true, /*detach_b=*/false);
        out.kl = kl_a.item();
        out.total = out.total + kl_a * T(alpha_moe) + kl_b * T(alpha_dense);
    } else {
        NoGrad ng;
        out.kl = symmetric_kl(la.detach(), lb.detach(), target_pad).item();
    }
    return out;
}

/// joint_loss with the padding mask derived from `target` (1 where target == pad).
template <class T>
JointLoss<T> joint_loss(const nn::AuxOutput<T>& moe_out, const nn::AuxOutput<T>& dense_out, const Tensor<int64_t>& target,
                        int64_t pad, bool use_kl, double alpha_moe, double alpha_dense, double label_smoothing = 0.0) {
    return joint_loss(moe_out, dense_out, target, nn::padding_mask(target, pad), pad, use_kl, alpha_moe, alpha_dense,
                      label_smoothing);
}

/// Whether an encoder or decoder layer's FFN is an MoE layer.
template <class T, class Layer>
bool has_moe_ffn(const Layer& l) {
    return dynamic_cast<const moe::MoELayerBase<T>*>(l.ffn.get()) != nullptr;
}

/// The shared-architecture dense model of an MoE nn::EncoderDecoder (the paper's Figure 1, l.38:
/// the dense model's odd layers, 1-based, are the MoE model's standard layers): dense layer i IS
/// the MoE model's layer i — the same module, so the same parameter tensors — when i is even,
/// the MoE model has a layer i and that layer's FFN is dense; every other layer is its own, a
/// dense layer of the MoE model's width. The embedding (and so a tied output projection) is the
/// MoE model's too: moekd's choice, the paper says nothing of the embeddings.
/// The module layout is nn::EncoderDecoder's ("encoder.layers.N...", "decoder..."), so its
/// state_dict loads strictly into a dense nn::EncoderDecoder of extracted_config(): that is
/// submodel extraction.
template <class T = float>
class SharedDense : public nn::Module<T> {
public:
    std::shared_ptr<nn::TransformerEncoder<T>> encoder;
    std::shared_ptr<nn::TransformerDecoder<T>> decoder;

    SharedDense(nn::EncoderDecoder<T>& moe_model, int64_t enc_layers, int64_t dec_layers, Generator& gen)
        : cfg_(moe_model.config()) {
        MOEKD_CHECK(enc_layers >= 1 && dec_layers >= 1, "tsjt: the dense model needs at least one encoder and one ",
                    "decoder layer, got ", enc_layers, " and ", dec_layers);
        cfg_.encoder_layers = enc_layers;
        cfg_.decoder_layers = dec_layers;
        const nn::LayerConfig lc = cfg_.layer;
        auto& me = *moe_model.encoder->layers;
        auto& md = *moe_model.decoder->layers;
        encoder = this->register_module("encoder", std::make_shared<nn::TransformerEncoder<T>>(lc, 0, gen, moe_model.encoder->embed_tokens));
        decoder = this->register_module("decoder", std::make_shared<nn::TransformerDecoder<T>>(lc, 0, gen, moe_model.decoder->embed_tokens, cfg_.tie_output));
        for (int64_t i = 0; i < enc_layers; ++i) {
            if (i % 2 == 0 && i < int64_t(me.size()) && !has_moe_ffn<T>(me[size_t(i)])) encoder->layers->push_back(me.ptr(i));
            else encoder->layers->push_back(std::make_shared<nn::TransformerEncoderLayer<T>>(lc, gen));
        }
        for (int64_t i = 0; i < dec_layers; ++i) {
            if (i % 2 == 0 && i < int64_t(md.size()) && !has_moe_ffn<T>(md[size_t(i)])) decoder->layers->push_back(md.ptr(i));
            else decoder->layers->push_back(std::make_shared<nn::TransformerDecoderLayer<T>>(lc, gen));
        }
    }
    /// The config of the standalone dense nn::EncoderDecoder this model's state_dict loads into.
    const nn::EncoderDecoderConfig& extracted_config() const { return cfg_; }
    /// src: (B, S), prev: (B, T) -> {logits (B, T, V), aux: undefined (no MoE layer)}; the
    /// padding masks are derived from the padding id, as nn::EncoderDecoder's forward does.
    nn::AuxOutput<T> forward_with_aux(const Tensor<int64_t>& src, const Tensor<int64_t>& prev) const {
        nn::AuxOutput<T> enc = encoder->forward_tokens_with_aux(src);
        return decoder->forward_tokens_with_aux(prev, enc.y, nn::padding_mask(src, cfg_.padding_idx), enc.aux);
    }

private:
    nn::EncoderDecoderConfig cfg_;
};

/// Parameters of several modules, each distinct tensor once (shared layers are counted once):
/// the list an optimizer of jointly trained models takes.
template <class T>
std::vector<Tensor<T>> unique_parameters(const std::vector<const nn::Module<T>*>& mods) {
    std::vector<Tensor<T>> out;
    std::vector<const void*> seen;
    for (const auto* m : mods)
        for (const Tensor<T>& p : m->parameters()) {
            const void* key = p.data();
            if (std::find(seen.begin(), seen.end(), key) != seen.end()) continue;
            seen.push_back(key);
            out.push_back(p);
        }
    return out;
}

template <class T>
int64_t count_elements(const std::vector<Tensor<T>>& ps) {
    int64_t n = 0;
    for (const auto& p : ps) n += p.numel();
    return n;
}

}  // namespace moekd::tsjt

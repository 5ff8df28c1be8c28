// transformer_bench_moekd.hpp — the moekd side of the Transformer-layer benchmark: one post-LN
// nn::TransformerEncoderLayer or nn::TransformerDecoderLayer (dropout 0, ReLU FFN), optim::Adam,
// and the training step that is timed: zero_grad, forward, y.backward(gy), Adam step.
// Used by transformer_bench.cpp (timing) and transformer_bench_torch.cpp (the numerical check).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <moekd/nn/transformer.hpp>
#include <moekd/optim/optimizers.hpp>

#include "transformer_bench.hpp"

namespace tbench {

struct MoekdSide {
    using Tf = moekd::Tensor<float>;
    Sizes s;
    Case which;
    std::shared_ptr<moekd::nn::TransformerEncoderLayer<float>> enc;
    std::shared_ptr<moekd::nn::TransformerDecoderLayer<float>> dec;
    std::unique_ptr<moekd::optim::Adam<float>> opt;
    std::vector<Tf> params;
    Tf x, mem, gy;  // x: (B, T, D), mem: (B, S, D), gy: (B, T, D); x and mem require grad
    bool bf16 = false;  // the step's products under moekd::Autocast (Adam stays fp32)

    MoekdSide(const Sizes& sz, Case c, const Inputs& in, uint64_t seed = 1234) : s(sz), which(c) {
        moekd::Generator gen(seed);
        moekd::nn::LayerConfig cfg;
        cfg.d_model = s.D;
        cfg.num_heads = s.H;
        cfg.ffn_dim = s.F;
        cfg.activation = moekd::nn::Activation::ReLU;
        cfg.pre_norm = false;
        cfg.dropout = cfg.attention_dropout = cfg.activation_dropout = 0.0;
        if (c == Case::Encoder) {
            enc = std::make_shared<moekd::nn::TransformerEncoderLayer<float>>(cfg, gen);
            enc->train();
            params = enc->parameters();
        } else {
            dec = std::make_shared<moekd::nn::TransformerDecoderLayer<float>>(cfg, gen);
            dec->train();
            params = dec->parameters();
        }
        opt = std::make_unique<moekd::optim::Adam<float>>(
            std::vector<moekd::optim::ParamGroup<float>>{{params, kLr, 0.0}}, kBeta1, kBeta2, kEps);
        x = Tf::from_vector(in.x, {s.B, s.T, s.D});
        x.requires_grad_();
        mem = Tf::from_vector(in.mem, {s.B, s.S, s.D});
        mem.requires_grad_();
        gy = Tf::from_vector(in.gy, {s.B, s.T, s.D});
    }

    /// y: (B, T, D)
    Tf forward() const { return which == Case::Encoder ? enc->forward(x) : dec->forward(x, mem, {}, {}, true); }

    std::vector<std::pair<std::string, Tf>> named_parameters() const {
        return which == Case::Encoder ? enc->named_parameters() : dec->named_parameters();
    }

    /// One training step: gradients to none, forward, backward with dL/dy = gy, Adam.
    void step() {
        for (auto& p : params) p.zero_grad();
        x.zero_grad();
        mem.zero_grad();
        {
            moekd::Autocast ac(bf16 ? moekd::Precision::bf16 : moekd::Precision::fp32);
            const Tf y = forward();
            y.backward(gy);
        }
        opt->step();
    }
};

}  // namespace tbench

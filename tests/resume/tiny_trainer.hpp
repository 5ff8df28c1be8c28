// tiny_trainer.hpp — a small but complete training loop whose every source of state goes into a
// checkpoint, so tests can prove that resuming is bit-identical to not stopping:
// a 2-layer MLP (linear, relu, dropout from its own Generator, linear) trained with Adam under
// an inverse_sqrt schedule on synthetic data reshuffled every epoch by another Generator.
// Used by tests/checkpoint_test.cpp (in-process) and tests/resume/trainer.cpp (kill -9).
#pragma once

#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <moekd/io/checkpoint.hpp>
#include <moekd/nn/module.hpp>
#include <moekd/ops/dropout.hpp>
#include <moekd/ops/loss.hpp>
#include <moekd/ops/matmul.hpp>
#include <moekd/optim/optimizers.hpp>
#include <moekd/optim/schedule.hpp>

namespace tiny {

using namespace moekd;

struct Config {
    int64_t in = 8, hidden = 16, classes = 4, samples = 40, batch = 8;
    double p_drop = 0.2, lr = 3e-2, weight_decay = 1e-2;
    int64_t warmup = 4;
    uint64_t seed = 1234;
    std::string str() const {
        return msg("in=", in, " hidden=", hidden, " classes=", classes, " samples=", samples, " batch=", batch,
                   " p_drop=", p_drop, " lr=", lr, " wd=", weight_decay, " warmup=", warmup, " seed=", seed);
    }
};

/// x: (B, in) -> logits: (B, classes)
struct MLP : nn::Module<float> {
    Tensor<float> w1, b1, w2, b2;
    double p;
    MLP(const Config& c, Generator& init) : p(c.p_drop) {
        w1 = register_parameter("fc1_weight", Tensor<float>::randn({c.hidden, c.in}, init, 0, 0.3));
        b1 = register_parameter("fc1_bias", Tensor<float>::zeros({c.hidden}));
        w2 = register_parameter("fc2_weight", Tensor<float>::randn({c.classes, c.hidden}, init, 0, 0.3));
        b2 = register_parameter("fc2_bias", Tensor<float>::zeros({c.classes}));
    }
    Tensor<float> forward(const Tensor<float>& x, Generator& drop) {
        Tensor<float> h = relu(linear(x, w1, b1));
        h = dropout(h, p, is_training(), drop);
        return linear(h, w2, b2);
    }
};

/// The whole run: model, optimizer, generators, data and position.
struct Trainer {
    Config cfg;
    std::shared_ptr<MLP> model;
    std::unique_ptr<optim::Adam<float>> opt;
    Generator drop_gen, shuffle_gen;
    Generator::State epoch_start;  // shuffle_gen before this epoch's shuffle: saved, so resume re-draws the order
    Tensor<float> x;                // (samples, in)
    Tensor<int64_t> y;              // (samples,)
    std::vector<int64_t> order;     // this epoch's shuffled sample order
    io::TrainState st;
    float last_loss = 0;

    explicit Trainer(const Config& c) : cfg(c), drop_gen(c.seed + 1), shuffle_gen(c.seed + 2) {
        Generator init(c.seed);
        model = std::make_shared<MLP>(c, init);
        opt = std::make_unique<optim::Adam<float>>(optim::decay_groups(model->parameters(), c.lr, c.weight_decay));
        // synthetic data: labels from a fixed random linear teacher
        Generator data(c.seed + 3);
        x = Tensor<float>::randn({c.samples, c.in}, data);
        Tensor<float> teacher = Tensor<float>::randn({c.classes, c.in}, data);
        y = Tensor<int64_t>::zeros({c.samples});
        for (int64_t i = 0; i < c.samples; ++i) {
            int64_t best = 0;
            float bv = -1e30f;
            for (int64_t k = 0; k < c.classes; ++k) {
                float s = 0;
                for (int64_t j = 0; j < c.in; ++j) s += x.data()[i * c.in + j] * teacher.data()[k * c.in + j];
                if (s > bv) bv = s, best = k;
            }
            y.data()[i] = best;
        }
        st.config = c.str();
        start_epoch();
    }

    void start_epoch() {
        epoch_start = shuffle_gen.state();
        order.resize(size_t(cfg.samples));
        std::iota(order.begin(), order.end(), 0);
        for (int64_t i = cfg.samples - 1; i > 0; --i) std::swap(order[size_t(i)], order[size_t(shuffle_gen.randint(0, i + 1))]);
    }

    void step() {
        const int64_t B = cfg.batch, per_epoch = cfg.samples / cfg.batch;
        Tensor<float> xb = Tensor<float>::empty({B, cfg.in});
        Tensor<int64_t> yb = Tensor<int64_t>::empty({B});
        for (int64_t r = 0; r < B; ++r) {
            const int64_t s = order[size_t(st.batch_index * B + r)];
            std::copy_n(x.data() + s * cfg.in, cfg.in, xb.data() + r * cfg.in);
            yb.data()[r] = y.data()[s];
        }
        opt->set_lr(optim::inverse_sqrt_lr(st.step + 1, cfg.lr, cfg.warmup));
        opt->zero_grad();
        Tensor<float> loss = cross_entropy(model->forward(xb, drop_gen), yb);
        loss.backward();
        opt->step();
        last_loss = loss.item();
        ++st.step;
        if (++st.batch_index == per_epoch) {
            st.batch_index = 0;
            ++st.epoch;
            start_epoch();
        }
    }

    std::map<std::string, const Generator*> gens_out(Generator& shuffle_at_epoch_start) const {
        return {{"dropout", &drop_gen}, {"shuffle", &shuffle_at_epoch_start}};
    }
    void save(const std::string& path) const {
        Generator s;
        s.set_state(epoch_start);
        io::save_checkpoint<float>(path, *model, opt.get(), gens_out(s), st);
    }
    std::string save_rotating(const std::string& dir, int keep) const {
        Generator s;
        s.set_state(epoch_start);
        return io::save_checkpoint_rotating<float>(dir, keep, *model, opt.get(), gens_out(s), st);
    }
    /// Restores everything; `skip_dropout_rng` deliberately forgets one piece (negative tests).
    void load(const std::string& path, bool skip_dropout_rng = false) {
        Generator dropout_copy = drop_gen;
        st = io::load_checkpoint<float>(path, *model, opt.get(), {{"dropout", &drop_gen}, {"shuffle", &shuffle_gen}});
        if (skip_dropout_rng) drop_gen = dropout_copy;
        start_epoch();  // re-draws this epoch's order and leaves shuffle_gen where it was
    }
};

}  // namespace tiny

// optim_parity.cpp — writes the trajectories of our optimizers for tests/optim_parity/check.py,
// which replays them with torch.optim (Adam, AdamW, SGD) and a LAMB written from the paper:
//   optim_parity <out.safetensors>
// Every optimizer starts from the same parameters (W (3, 4) decayed; b (4,) and z (5,) = 0 not
// decayed: two param groups, and a zero tensor for LAMB's trust ratio) and sees the same
// gradients at each of 5 steps. The file holds (all F32):
//   init.<i>, grad.<step>.<i>, traj.<optimizer>.<step>.<i>   (step 1..5, param i = 0, 1, 2)
// and the hyper-parameters as JSON in __metadata__["config"], so the script uses the same ones.
#include <cstdio>
#include <functional>
#include <memory>

#include <moekd/io/json.hpp>
#include <moekd/io/safetensors.hpp>
#include <moekd/optim/optimizers.hpp>

using namespace moekd;
using namespace moekd::optim;

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: optim_parity <out.safetensors>\n");
        return 2;
    }
    const int steps = 5;
    const double lr_w = 0.05, lr_b = 0.02, wd = 0.05;
    Generator g(99);
    std::map<std::string, Tensor<float>> out;
    std::vector<Tensor<float>> init = {Tensor<float>::randn({3, 4}, g), Tensor<float>::randn({4}, g),
                                       Tensor<float>::zeros({5})};
    for (size_t i = 0; i < init.size(); ++i) out["init." + std::to_string(i)] = init[i];
    std::vector<std::vector<Tensor<float>>> grads(steps + 1);
    for (int s = 1; s <= steps; ++s)
        for (size_t i = 0; i < init.size(); ++i) {
            // a gradient with a drifting mean so the moments matter, and one exact zero per tensor
            Tensor<float> gr = Tensor<float>::randn(init[i].shape(), g, 0.1 * s, 1.0);
            gr.data()[0] = 0.0f;
            grads[size_t(s)].push_back(gr);
            out["grad." + std::to_string(s) + "." + std::to_string(i)] = gr;
        }

    using Make = std::function<std::unique_ptr<Optimizer<float>>(std::vector<ParamGroup<float>>)>;
    const std::vector<std::pair<std::string, Make>> opts = {
        {"sgd_momentum", [](auto gr) { return std::make_unique<SGD<float>>(std::move(gr), 0.9, 0.1, false); }},
        {"sgd_nesterov", [](auto gr) { return std::make_unique<SGD<float>>(std::move(gr), 0.9, 0.0, true); }},
        {"adam", [](auto gr) { return std::make_unique<Adam<float>>(std::move(gr), 0.9, 0.999, 1e-8); }},
        {"adamw", [](auto gr) { return std::make_unique<AdamW<float>>(std::move(gr), 0.8, 0.99, 1e-8); }},
        {"lamb", [](auto gr) { return std::make_unique<LAMB<float>>(std::move(gr), 0.9, 0.999, 1e-6); }},
    };
    for (auto& [name, make] : opts) {
        std::vector<Tensor<float>> p;
        for (auto& t : init) p.push_back(t.clone().detach().requires_grad_());
        auto opt = make({{{p[0]}, lr_w, wd}, {{p[1], p[2]}, lr_b, 0.0}});
        for (int s = 1; s <= steps; ++s) {
            for (size_t i = 0; i < p.size(); ++i) p[i].set_grad(grads[size_t(s)][i].clone());
            opt->step();
            for (size_t i = 0; i < p.size(); ++i)
                out["traj." + name + "." + std::to_string(s) + "." + std::to_string(i)] = p[i].detach().clone();
        }
    }
    const json::Value cfg = {
        {"steps", steps},
        {"groups", {{{"params", {0}}, {"lr", lr_w}, {"weight_decay", wd}},
                    {{"params", {1, 2}}, {"lr", lr_b}, {"weight_decay", 0.0}}}},
        {"sgd_momentum", {{"momentum", 0.9}, {"dampening", 0.1}}},
        {"sgd_nesterov", {{"momentum", 0.9}, {"dampening", 0.0}}},
        {"adam", {{"betas", {0.9, 0.999}}, {"eps", 1e-8}}},
        {"adamw", {{"betas", {0.8, 0.99}}, {"eps", 1e-8}}},
        {"lamb", {{"betas", {0.9, 0.999}}, {"eps", 1e-6}}},
    };
    io::write_safetensors(argv[1], out, {{"config", json::dump(cfg)}});
    std::printf("wrote %zu tensors (5 optimizers x %d steps x 3 parameters) to %s\n", out.size(), steps, argv[1]);
    return 0;
}

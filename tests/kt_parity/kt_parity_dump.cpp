// kt_parity_dump.cpp — writes inputs, outputs and gradients of the knowledge-transfer losses
// (and the singular values of linalg::svd), computed by moekd in fp32, to one safetensors file;
// tests/kt_parity/kt_parity.py recomputes everything with PyTorch's own formulations and compares.
//   kt_parity_dump <out.safetensors>
// Names: "<case>.<tensor>", e.g. symkl.a, symkl.loss, symkl.grad_a. Scalars (temperature, the
// detach flags) go into the metadata as "<case>.<key>".
#include <cstdio>
#include <map>
#include <string>

#include <moekd/autograd/engine.hpp>
#include <moekd/io/safetensors.hpp>
#include <moekd/linalg/svd.hpp>
#include <moekd/losses/kd.hpp>
#include <moekd/losses/relation.hpp>

using namespace moekd;
using TMap = std::map<std::string, Tensor<float>>;

namespace {

Tensor<float> leaf(const Shape& s, Generator& gen, double scale = 1.0) {
    Tensor<float> t = Tensor<float>::randn(s, gen, 0.0, scale);
    t.requires_grad_();
    return t;
}

void symkl(TMap& out, Generator& gen) {
    // (B, T, V) = (2, 3, 1000), one token padded; a sharper side b
    Tensor<float> a = leaf({2, 3, 1000}, gen, 2.0), b = leaf({2, 3, 1000}, gen, 3.0);
    Tensor<uint8_t> mask = Tensor<uint8_t>::from_vector({0, 0, 1, 0, 0, 0}, {2, 3});
    Tensor<float> l = symmetric_kl(a, b, mask);
    l.backward();
    out["symkl.a"] = a.detach();
    out["symkl.b"] = b.detach();
    out["symkl.pad_mask"] = cast<float>(mask);
    out["symkl.loss"] = l.detach();
    out["symkl.grad_a"] = a.grad();
    out["symkl.grad_b"] = b.grad();
}

void distill(TMap& out, Generator& gen) {
    Tensor<float> s = leaf({4, 5, 300}, gen, 2.0), t = Tensor<float>::randn({4, 5, 300}, gen, 0.0, 2.0);
    Tensor<float> l = soft_distill(s, t, 2.0);
    l.backward();
    out["soft.s"] = s.detach();
    out["soft.t"] = t;
    out["soft.loss"] = l.detach();
    out["soft.grad_s"] = s.grad();
    s.zero_grad();
    Tensor<float> h = hard_distill(s, t);
    h.backward();
    out["hard.loss"] = h.detach();
    out["hard.grad_s"] = s.grad();
}

void relation(TMap& out, Generator& gen) {
    Tensor<float> s = leaf({3, 16, 24}, gen), t = leaf({3, 16, 40}, gen);
    Tensor<float> l = relation_loss(s, t, /*detach_teacher=*/false);
    l.backward();
    out["relation.s"] = s.detach();
    out["relation.t"] = t.detach();
    out["relation.loss"] = l.detach();
    out["relation.grad_s"] = s.grad();
    out["relation.grad_t"] = t.grad();
}

void qk_relation(TMap& out, Generator& gen) {
    Tensor<float> qs = leaf({2, 3, 8, 6}, gen), ks = leaf({2, 3, 8, 6}, gen);
    Tensor<float> qt = leaf({2, 3, 8, 10}, gen), kt = leaf({2, 3, 8, 10}, gen);
    Tensor<float> l = qk_relation_loss(qs, ks, qt, kt, /*detach_teacher=*/false);
    l.backward();
    out["qk.qs"] = qs.detach();
    out["qk.ks"] = ks.detach();
    out["qk.qt"] = qt.detach();
    out["qk.kt"] = kt.detach();
    out["qk.loss"] = l.detach();
    out["qk.grad_qs"] = qs.grad();
    out["qk.grad_ks"] = ks.grad();
    out["qk.grad_qt"] = qt.grad();
    out["qk.grad_kt"] = kt.grad();
}

void svd(TMap& out, Generator& gen) {
    Tensor<float> A = Tensor<float>::randn({2, 48, 80}, gen);
    auto r = linalg::svd(A);
    out["svd.A"] = A;
    out["svd.S"] = r.S;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <out.safetensors>\n", argv[0]);
        return 2;
    }
    Generator gen(2024);
    TMap out;
    symkl(out, gen);
    distill(out, gen);
    relation(out, gen);
    qk_relation(out, gen);
    svd(out, gen);
    io::write_safetensors(argv[1], out, {{"soft.temperature", "2.0"}, {"relation.eps", "1e-8"}});
    std::printf("kt_parity_dump: wrote %zu tensors to %s\n", out.size(), argv[1]);
    return 0;
}

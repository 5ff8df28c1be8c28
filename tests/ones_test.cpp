// ones_test.cpp — OneS knowledge integration: SVD knowledge gathering (linalg/knowledge_gathering.hpp,
// eq. 10-14) and the OneS steps of methods/ones.hpp (matched-layer copy, FFN gathering, the
// distillation objective) on nn::WideNetViT and on nn::EncoderDecoder.
// Checks: lambda = 1 with one expert gives the expert back; with several experts W_g is the sum of
// the truncated reconstructions U_i[:, :K_i] S_i V_i^T (computed here from linalg::svd, and on
// hand-made diagonal experts whose answer is known exactly); K_i follows eq. 12; the matched-layer
// copy is bit-identical; a one-expert top-1 teacher and its gathered student compute the same
// logits; bad input throws naming the problem. (The KD losses soft_distill / hard_distill are
// checked against PyTorch in tests/kt_parity.)
#include <cmath>
#include <cstring>

#include <catch2/catch.hpp>

#include <moekd/linalg/knowledge_gathering.hpp>

#include <moekd/methods/ones.hpp>
#include <moekd/nn/widenet.hpp>

using namespace moekd;
using Catch::Matchers::Contains;

namespace {

template <class T>
double max_abs_diff(const Tensor<T>& a, const Tensor<T>& b) {
    REQUIRE(a.shape() == b.shape());
    const Tensor<T> ac = a.contiguous(), bc = b.contiguous();
    double d = 0;
    for (int64_t i = 0; i < ac.numel(); ++i) d = std::max(d, std::abs(double(ac.data()[i]) - double(bc.data()[i])));
    return d;
}

/// eq. 12 by hand: smallest K with sum of the K largest >= lambda * total (S is descending).
int64_t rank_by_hand(const std::vector<double>& s, double lambda) {
    double total = 0, acc = 0;
    for (double v : s) total += v;
    for (size_t k = 0; k < s.size(); ++k)
        if ((acc += s[k]) >= lambda * total) return int64_t(k + 1);
    return int64_t(s.size());
}

/// sum_i w_i U_i[:, :K_i] diag(S_i[:K_i]) Vt_i[:K_i, :] in double, from each expert's own SVD.
template <class T>
std::vector<double> truncated_sum(const std::vector<Tensor<T>>& ex, double lambda, const std::vector<double>& w,
                                  std::vector<int64_t>& ranks) {
    const int64_t M = ex[0].size(0), N = ex[0].size(1), Kf = std::min(M, N);
    std::vector<double> out(size_t(M * N), 0.0);
    ranks.clear();
    for (size_t e = 0; e < ex.size(); ++e) {
        const auto d = linalg::svd(ex[e]);
        std::vector<double> s(d.S.data(), d.S.data() + Kf);
        const int64_t K = rank_by_hand(s, lambda);
        ranks.push_back(K);
        for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j)
                for (int64_t k = 0; k < K; ++k)
                    out[size_t(i * N + j)] += w[e] * double(d.U.data()[i * Kf + k]) * s[size_t(k)] * double(d.Vt.data()[k * N + j]);
    }
    return out;
}

}  // namespace

TEST_CASE("gather_weights: lambda = 1 and one expert reproduces the expert", "[ones]") {
    Generator gen(3);
    SECTION("double, tall") {
        const auto W = Tensor<double>::randn({24, 10}, gen);
        const auto g = linalg::gather_weights<double>({W}, 1.0);
        CHECK(g.ranks == std::vector<int64_t>{10});
        CHECK(max_abs_diff(g.weight, W) < 1e-10);
    }
    SECTION("float, wide") {
        const auto W = Tensor<float>::randn({16, 40}, gen);
        const auto g = linalg::gather_weights<float>({W}, 1.0);
        CHECK(g.ranks == std::vector<int64_t>{16});
        CHECK(max_abs_diff(g.weight, W) < 1e-5);
    }
}

TEST_CASE("gather_weights: W_g is the sum of the truncated reconstructions (eq. 13-14)", "[ones]") {
    Generator gen(11);
    for (double lambda : {0.3, 0.7, 0.9, 1.0}) {
        for (const Shape& shape : {Shape{20, 12}, Shape{9, 30}}) {
            std::vector<Tensor<double>> ex;
            for (int e = 0; e < 4; ++e) ex.push_back(Tensor<double>::randn(shape, gen) * double(e + 1));
            const std::vector<double> w = {1.0, 0.5, 2.0, 0.25};
            for (const bool weighted : {false, true}) {
                const std::vector<double> wt = weighted ? w : std::vector<double>(4, 1.0);
                std::vector<int64_t> ranks;
                const std::vector<double> want = truncated_sum(ex, lambda, wt, ranks);
                const auto g = weighted ? linalg::gather_weights(ex, lambda, w) : linalg::gather_weights(ex, lambda);
                INFO("lambda " << lambda << " shape " << shape << " weighted " << weighted);
                CHECK(g.ranks == ranks);
                int64_t sum_k = 0;
                for (auto k : ranks) sum_k += k;
                CHECK(g.U.shape() == Shape{shape[0], sum_k});
                CHECK(g.Vt.shape() == Shape{sum_k, shape[1]});
                double d = 0;
                for (size_t i = 0; i < want.size(); ++i) d = std::max(d, std::abs(g.weight.data()[i] - want[i]));
                CHECK(d < 1e-10);
                if (lambda == 1.0 && !weighted) {  // nothing truncated: the plain sum of the experts
                    Tensor<double> s = ex[0] + ex[1] + ex[2] + ex[3];
                    CHECK(max_abs_diff(g.weight, s) < 1e-10);
                }
            }
        }
    }
}

TEST_CASE("gather_weights: hand-made spectra give the known K_i and W_g", "[ones]") {
    // Diagonal experts: singular values are |diagonal|; truncation keeps the largest entries.
    auto diag = [](std::vector<double> v) {
        auto t = Tensor<double>::zeros({int64_t(v.size()), int64_t(v.size())});
        for (size_t i = 0; i < v.size(); ++i) t.data()[i * v.size() + i] = v[i];
        return t;
    };
    const auto A = diag({4, 3, 2, 1}), B = diag({1, 2, -3, 4});  // sums 10 each
    SECTION("lambda 0.7: 4 + 3 = 7 reaches 70% -> K = 2 each") {
        const auto g = linalg::gather_weights<double>({A, B}, 0.7);
        CHECK(g.ranks == std::vector<int64_t>{2, 2});
        CHECK(max_abs_diff(g.weight, diag({4, 3, -3, 4})) < 1e-12);
    }
    SECTION("lambda 0.71 needs a third value -> K = 3") {
        const auto g = linalg::gather_weights<double>({A, B}, 0.71);
        CHECK(g.ranks == std::vector<int64_t>{3, 3});
        CHECK(max_abs_diff(g.weight, diag({4, 3 + 2, 2 - 3, 4})) < 1e-12);
    }
    SECTION("lambda 0.4 keeps only the largest; weights scale each expert") {
        const auto g = linalg::gather_weights<double>({A, B}, 0.4, {0.5, 2.0});
        CHECK(g.ranks == std::vector<int64_t>{1, 1});
        CHECK(max_abs_diff(g.weight, diag({2, 0, 0, 8})) < 1e-12);
    }
}

TEST_CASE("average_biases: eq. 10 mean, and the weighted mean", "[ones]") {
    const auto a = Tensor<double>::from_vector({1, 2, 3}, {3}), b = Tensor<double>::from_vector({3, 4, 5}, {3});
    CHECK(max_abs_diff(linalg::average_biases<double>({a, b}), Tensor<double>::from_vector({2, 3, 4}, {3})) < 1e-15);
    CHECK(max_abs_diff(linalg::average_biases<double>({a, b}, {3.0, 1.0}),
                       Tensor<double>::from_vector({1.5, 2.5, 3.5}, {3})) < 1e-15);
}

TEST_CASE("gather_weights / average_biases: bad input is a clear error", "[ones]") {
    Generator gen(5);
    const auto W = Tensor<float>::randn({6, 4}, gen);
    CHECK_THROWS_WITH(linalg::gather_weights<float>({W}, 0.0), Contains("lambda = 0 is outside (0, 1]"));
    CHECK_THROWS_WITH(linalg::gather_weights<float>({W}, 1.5), Contains("lambda = 1.5 is outside (0, 1]"));
    CHECK_THROWS_WITH(linalg::gather_weights<float>({W}, -0.2), Contains("is outside (0, 1]"));
    CHECK_THROWS_WITH(linalg::gather_weights<float>({}, 0.9), Contains("no experts given"));
    CHECK_THROWS_WITH(linalg::gather_weights<float>({W, Tensor<float>::randn({4, 6}, gen)}, 0.9),
                      Contains("expert 1 weight (4, 6) does not match expert 0 weight (6, 4)"));
    CHECK_THROWS_WITH(linalg::gather_weights<float>({Tensor<float>::randn({6}, gen)}, 0.9), Contains("must be a matrix"));
    CHECK_THROWS_WITH(linalg::gather_weights<float>({W, W}, 0.9, {1.0}), Contains("1 expert weights given for 2 experts"));
    CHECK_THROWS_WITH(linalg::gather_weights<float>({W, W}, 0.9, {1.0, -1.0}), Contains("expert weight 1 is -1"));
    CHECK_THROWS_WITH(linalg::gather_weights<float>({W, W}, 0.9, {0.0, 0.0}), Contains("sum to 0"));
    CHECK_THROWS_WITH(linalg::average_biases<float>({}), Contains("no expert biases given"));
    CHECK_THROWS_WITH(linalg::average_biases<float>({Tensor<float>::zeros({3}), Tensor<float>::zeros({4})}),
                      Contains("expert 1 bias (4,) does not match expert 0 bias (3,)"));
    auto bad = Tensor<float>::randn({6, 4}, gen);
    bad.data()[5] = std::nanf("");
    CHECK_THROWS_WITH(linalg::gather_weights<float>({W, bad}, 0.9), Contains("non-finite"));
}

TEST_CASE("copy_matched_layers: every matched tensor is copied bit for bit, gather_ffn fills the FFN", "[ones]") {
    nn::WideNetConfig c;
    c.dim = 16, c.heads = 2, c.ffn_dim = 24, c.layers = 3, c.experts = 4;
    Generator g1(1), g2(2);
    nn::WideNetViT<float> teacher(c, g1), student(c.dense(), g2);
    const auto names = ones::copy_matched_layers(teacher, student);
    const auto ts = teacher.state_dict(), ss = student.state_dict();
    int64_t matched = 0;
    for (auto& [n, t] : ts) matched += ones::is_ffn_name(n) ? 0 : 1;
    CHECK(int64_t(names.size()) == matched);
    CHECK(matched == 4 + 8 + 2 * 2 * 3 + 2 + 2);  // embeddings 4, attention 8, 2 LN x 3 blocks, final LN, classifier
    for (const auto& n : names) {
        INFO(n);
        const auto a = ts.at(n).contiguous(), b = ss.at(n).contiguous();
        REQUIRE(a.shape() == b.shape());
        CHECK(std::memcmp(a.data(), b.data(), sizeof(float) * size_t(a.numel())) == 0);
        CHECK(!a.is_same(b));  // a copy, not a shared handle
    }
    const auto rep = ones::gather_ffn(teacher, student, 0.8);
    std::vector<Tensor<float>> w1, b2;
    for (auto& ex : *teacher.moe()->experts) w1.push_back(ex->fc1->weight), b2.push_back(ex->fc2->bias);
    const auto g = linalg::gather_weights(w1, 0.8);
    CHECK(rep.fc1_ranks == g.ranks);
    CHECK(max_abs_diff(student.ffn()->fc1->weight, g.weight) == 0.0);
    CHECK(max_abs_diff(student.ffn()->fc2->bias, linalg::average_biases(b2)) == 0.0);

    nn::WideNetConfig c2 = c;
    c2.dim = 32, c2.heads = 2;
    Generator g3(3);
    nn::WideNetViT<float> wrong(c2.dense(), g3);
    CHECK_THROWS_WITH(ones::copy_matched_layers(teacher, wrong), Contains("'classifier.weight' is (10, 16) in the teacher but (10, 32) in the student"));
}

TEST_CASE("OneS init: a one-expert top-1 teacher and its gathered student compute the same logits", "[ones]") {
    nn::WideNetConfig c;
    c.dim = 16, c.heads = 2, c.ffn_dim = 20, c.layers = 2, c.experts = 1, c.top_k = 1;
    Generator g1(7), g2(8), gx(9);
    nn::WideNetViT<double> teacher(c, g1), student(c.dense(), g2);
    {  // give the LayerNorms and biases non-trivial values so the copy matters
        NoGrad ng;
        for (auto& p : teacher.parameters())
            if (p.dim() == 1) moekd::detail::copy_into(p, Tensor<double>::randn(p.shape(), gx, 0.5, 0.3));
    }
    ones::copy_matched_layers(teacher, student);
    ones::gather_ffn(teacher, student, 1.0);
    teacher.eval(), student.eval();
    const auto x = Tensor<double>::rand({3, 1, 28, 28}, gx);
    NoGrad ng;
    const auto lt = teacher.forward(x), ls = student.forward(x);
    CHECK(max_abs_diff(lt, ls) < 1e-9);
    Generator g4(10);
    nn::WideNetViT<double> fresh(c.dense(), g4);
    CHECK(max_abs_diff(lt, fresh.forward(x)) > 1e-3);  // the check above can fail
}

TEST_CASE("WideNetConfig::renormalize_gates = false: OneS eq. 2's top-2 gates are the softmax values", "[ones]") {
    nn::WideNetConfig c;
    c.dim = 16, c.heads = 2, c.ffn_dim = 24, c.layers = 1, c.experts = 4;
    CHECK(c.stack().router.normalize());  // the default: renormalised over the two
    nn::WideNetConfig top1 = c;
    top1.top_k = 1, top1.renormalize_gates = false;
    CHECK_FALSE(top1.stack().router.normalize());  // top-1 is unchanged: never renormalised
    CHECK(c.stack().balance == moe::BalanceLoss::Switch);
    nn::WideNetConfig all = c;
    all.balance_all_choices = true;
    CHECK(all.stack().balance == moe::BalanceLoss::SwitchAllChoices);
    for (bool renorm : {true, false}) {
        c.renormalize_gates = renorm;
        Generator g(5);
        nn::WideNetViT<float> t(c, g);
        t.eval();
        const Tensor<float> x = Tensor<float>::randn({12, 16}, g);
        NoGrad ng;
        const auto out = t.moe()->forward_with_stats(x, Tensor<uint8_t>());
        const auto gates = out.routing.gates.contiguous().to_vector(), probs = out.routing.probs.contiguous().to_vector();
        const auto experts = out.routing.experts.contiguous().to_vector();
        double worst_sum = 0, worst_prob = 0;
        for (int64_t n = 0; n < 12; ++n) {
            const double g0 = gates[size_t(2 * n)], g1 = gates[size_t(2 * n + 1)];
            const double p0 = probs[size_t(n * 4 + experts[size_t(2 * n)])], p1 = probs[size_t(n * 4 + experts[size_t(2 * n + 1)])];
            worst_sum = std::max(worst_sum, std::abs(g0 + g1 - 1.0));
            worst_prob = std::max(worst_prob, std::max(std::abs(g0 - p0), std::abs(g1 - p1)));
        }
        INFO("renormalised " << renorm << ": max |g0 + g1 - 1| " << worst_sum << ", max |g - p| " << worst_prob);
        if (renorm) {
            CHECK(worst_sum < 1e-6);
            CHECK(worst_prob > 1e-3);
        } else {
            CHECK(worst_prob < 1e-7);
            CHECK(worst_sum > 1e-3);  // four experts: two probabilities never sum to 1
        }
    }
}

TEST_CASE("ones::is_ffn_name reads dotted components", "[ones]") {
    CHECK(ones::is_ffn_name("moe.experts.0.fc1.weight"));
    CHECK(ones::is_ffn_name("encoder.ffn.fc2.bias"));
    CHECK(ones::is_ffn_name("encoder.layers.1.moe.gate.weight"));
    CHECK_FALSE(ones::is_ffn_name("encoder.layers.1.ffn_adapter.down.weight"));
    CHECK_FALSE(ones::is_ffn_name("encoder.attn.q_proj.weight"));
    CHECK_FALSE(ones::is_ffn_name("moes.x"));
}

TEST_CASE("ones: copy and gather between an MoE nn::EncoderDecoder and its dense twin", "[ones]") {
    nn::EncoderDecoderConfig c;
    c.src_vocab = c.tgt_vocab = 30;
    c.layer.d_model = 16, c.layer.num_heads = 2, c.layer.ffn_dim = 24;
    c.encoder_layers = c.decoder_layers = 2;
    auto moe_at_1 = [](int64_t i, Generator& gen) -> std::shared_ptr<nn::FFNBase<float>> {
        if (i != 1) return nullptr;
        moe::MoEConfig m;
        m.d_model = 16, m.ffn_dim = 24;
        m.router.num_experts = 3;
        return std::make_shared<moe::MoELayer<float>>(m, gen);
    };
    Generator g1(1), g2(2);
    nn::EncoderDecoder<float> teacher(c, g1, moe_at_1, moe_at_1), student(c, g2);
    const auto names = ones::copy_matched_layers(teacher, student);
    const auto ss = student.state_dict();
    CHECK(!names.empty());
    for (const auto& n : names) CHECK(max_abs_diff(teacher.state_dict().at(n), ss.at(n)) == 0.0);
    // the FFNs (layer 0's dense ones too) are not copied
    CHECK(max_abs_diff(teacher.state_dict().at("encoder.layers.0.ffn.fc1.weight"), ss.at("encoder.layers.0.ffn.fc1.weight")) > 0);
    auto* moe_layer = dynamic_cast<moe::MoELayer<float>*>((*teacher.encoder->layers)[1].ffn.get());
    auto* ffn = dynamic_cast<nn::FeedForward<float>*>((*student.encoder->layers)[1].ffn.get());
    REQUIRE(moe_layer);
    REQUIRE(ffn);
    const auto rep = ones::gather_ffn(*moe_layer, *ffn, 0.5);
    CHECK(rep.fc1_ranks.size() == 3);
    CHECK(rep.full_rank == 16);
    const auto g = linalg::gather_weights(moe_layer->expert_weights().w1, 0.5);
    CHECK(max_abs_diff(ffn->fc1->weight, g.weight) == 0.0);
    // a student of another width: nothing is copied, the error names the tensor
    nn::EncoderDecoderConfig wide = c;
    wide.layer.d_model = 32;
    Generator g3(3);
    nn::EncoderDecoder<float> other(wide, g3);
    const auto before = other.state_dict().at("encoder.embed_tokens.weight").contiguous();
    CHECK_THROWS_WITH(ones::copy_matched_layers(teacher, other), Contains("in the teacher but") && Contains("in the student"));
    CHECK(max_abs_diff(other.state_dict().at("encoder.embed_tokens.weight"), before) == 0.0);
}

TEST_CASE("ones::distill_loss is alpha * CE + (1 - alpha) * KD", "[ones]") {
    Generator gen(5);
    const auto s = Tensor<double>::randn({6, 4}, gen), t = Tensor<double>::randn({6, 4}, gen);
    const auto y = Tensor<int64_t>::from_vector({0, 1, 2, 3, 1, 0}, {6});
    const double ce = cross_entropy(s, y).item();
    const double soft = soft_distill(s, t, 2.0).item(), hard = hard_distill(s, t).item();
    CHECK(ones::distill_loss(s, t, y, 0.25, 2.0).item() == Approx(0.25 * ce + 0.75 * soft).epsilon(1e-12));
    CHECK(ones::distill_loss(s, t, y, 0.5, 1.0, true).item() == Approx(0.5 * ce + 0.5 * hard).epsilon(1e-12));
    CHECK(std::abs(soft - hard) > 1e-3);  // the two checks above can tell the KD kinds apart
    CHECK_THROWS_WITH(ones::distill_loss(s, t, y, 1.5), Contains("alpha 1.5 must be in [0, 1]"));
}

// methods.cpp — a user's trainer outside the repository, on moekd's public headers alone: the
// three methods of moekd/methods/, each on a tiny model, exit 0 only if each did what it says.
//   TSJT  an MoE encoder-decoder and a dense model sharing its standard layers, trained jointly
//         on a copy task; stage 1 (symmetric KL) until the KL window mean falls under t_sep, then
//         stage 2 (no KL); the losses must fall and the switch must happen
//   TCD   a vanilla BERT teacher and an MoE BERT student, their representations captured by
//         hooks; the relation loss must be positive and give the student gradients, none to the teacher
//   OneS  an MoE WideNet ViT folded into its dense twin (matched-layer copy + SVD gathering); with
//         one expert, top-1 and lambda = 1 the student computes the teacher's logits
#include <moekd/methods/ones.hpp>
#include <moekd/methods/tcd.hpp>
#include <moekd/methods/tsjt.hpp>
#include <moekd/optim/optimizers.hpp>

#include <cmath>
#include <cstdio>

using namespace moekd;

static int failures = 0;
static double max_abs_diff(const Tensor<double>& a, const Tensor<double>& b) {
    const Tensor<double> x = a.contiguous(), y = b.contiguous();
    double m = 0;
    for (int64_t i = 0; i < x.numel(); ++i) m = std::fmax(m, std::fabs(x.data()[i] - y.data()[i]));
    return m;
}
static void check(bool ok, const char* what) {
    std::printf("%s: %s\n", ok ? "ok" : "FAIL", what);
    failures += ok ? 0 : 1;
}

static void run_tsjt() {
    nn::EncoderDecoderConfig c;
    c.src_vocab = c.tgt_vocab = 12;
    c.padding_idx = 0;
    c.share_embeddings = c.tie_output = true;
    c.layer.d_model = 16, c.layer.num_heads = 2, c.layer.ffn_dim = 32, c.layer.dropout = 0.0;
    c.encoder_layers = c.decoder_layers = 2;
    auto moe_every_other = [](int64_t i, Generator& gen) -> std::shared_ptr<nn::FFNBase<float>> {
        if (i % 2 == 0) return nullptr;
        moe::MoEConfig m;
        m.d_model = 16, m.ffn_dim = 32;
        m.router.num_experts = 4, m.router.top_k = 1;
        return std::make_shared<moe::MoELayer<float>>(m, gen);
    };
    Generator gen(1);
    nn::EncoderDecoder<float> moe_model(c, gen, moe_every_other, moe_every_other);
    tsjt::SharedDense<float> dense(moe_model, 2, 2, gen);
    const auto params = tsjt::unique_parameters<float>({&moe_model, &dense});
    check(tsjt::count_elements(params) < moe_model.num_parameters() + dense.num_parameters(),
          "tsjt: the shared layers are counted once");
    optim::Adam<float> opt({{params, 1e-2}});
    tsjt::StageController stage(tsjt::Mode::tsjt, /*t_sep=*/0.05, /*window=*/5, /*min_steps=*/50);
    // copy task: target = source; decoder input = BOS (1) + target[:-1]
    Generator data(2);
    double first = 0, last = 0;
    for (int64_t step = 1; step <= 200; ++step) {
        Tensor<int64_t> src = Tensor<int64_t>::zeros({8, 6}), prev = Tensor<int64_t>::zeros({8, 6});
        for (int64_t i = 0; i < 48; ++i) src.data()[i] = 2 + data.randint(0, 10);
        for (int64_t b = 0; b < 8; ++b) {
            prev.data()[b * 6] = 1;
            for (int64_t t = 1; t < 6; ++t) prev.data()[b * 6 + t] = src.data()[b * 6 + t - 1];
        }
        const nn::AuxOutput<float> a = moe_model.forward_with_aux(src, prev), d = dense.forward_with_aux(src, prev);
        const tsjt::JointLoss<float> l = tsjt::joint_loss(a, d, src, c.padding_idx, stage.use_kl(), 5.0, 10.0);
        opt.zero_grad();
        l.total.backward();
        opt.step();
        if (step == 1) first = l.ce_moe + l.ce_dense;
        last = l.ce_moe + l.ce_dense;
        if (stage.observe(step, l.kl)) std::printf("tsjt: stage 2 from update %lld (KL %.4f)\n", (long long)step, l.kl);
    }
    std::printf("tsjt: CE moe + dense %.3f -> %.3f\n", first, last);
    check(last < 0.5 * first, "tsjt: both models learn the copy task");
    check(stage.stage() == 2 && stage.switch_step() >= 50, "tsjt: the stage switch happened, after min_steps");
    nn::EncoderDecoderConfig ec = dense.extracted_config();
    Generator g2(3);
    nn::EncoderDecoder<float> standalone(ec, g2);
    bool loaded = true;
    try {
        standalone.load_state_dict(dense.state_dict(), true);
    } catch (const std::exception& e) {
        std::printf("%s\n", e.what());
        loaded = false;
    }
    check(loaded, "tsjt: the dense model's state_dict loads strictly into a plain EncoderDecoder");
}

static void run_tcd() {
    nn::BertConfig bc;
    bc.vocab_size = 40, bc.hidden_size = 16, bc.num_layers = 2, bc.num_heads = 2, bc.intermediate_size = 32;
    bc.max_position_embeddings = 16;
    bc.hidden_dropout = bc.attention_dropout = 0.0;
    auto moe_ffn = [](int64_t, Generator& g) -> std::shared_ptr<nn::FFNBase<float>> {
        moe::MoEConfig m;
        m.d_model = 16, m.ffn_dim = 32, m.activation = nn::Activation::GELU;
        m.router.num_experts = 4, m.router.top_k = 1;
        return std::make_shared<moe::MoELayer<float>>(m, g);
    };
    Generator gen(4);
    nn::BertEncoder<float> teacher(bc, gen), student(bc, gen, moe_ffn);
    tcd::TcdWeights w;  // lambda_T = lambda_I = lambda_A = 1
    tcd::RepresentationCapture<float> cs(student, tcd::CaptureWhat::from(w)), ct(teacher, tcd::CaptureWhat::from(w));
    Tensor<int64_t> ids = Tensor<int64_t>::zeros({2, 8});
    for (int64_t i = 0; i < 16; ++i) ids.data()[i] = 1 + gen.randint(0, 39);
    {
        NoGrad ng;
        teacher.forward_with_aux(ids);
    }
    student.forward_with_aux(ids);
    const Tensor<int64_t> groups = tcd::sample_batch_token_groups(2, 8, Tensor<uint8_t>(), 2, 6, gen);
    const auto loss = tcd::tcd_loss(cs, ct, groups, w);
    std::printf("tcd: L_T %.4f L_I %.4f L_A %.4f\n", loss.trunk.item(), loss.inner.item(), loss.attention.item());
    check(loss.total.item() > 0, "tcd: the relation loss of two different models is positive");
    loss.total.backward();
    double gs = 0;
    for (auto& p : student.parameters())
        if (p.grad().defined()) gs += std::fabs(sum(p.grad()).item());
    bool teacher_grad = false;
    for (auto& p : teacher.parameters()) teacher_grad = teacher_grad || p.grad().defined();
    check(gs > 0 && !teacher_grad, "tcd: the student gets gradients, the teacher none");
}

static void run_ones() {
    nn::WideNetConfig c;
    c.dim = 16, c.heads = 2, c.ffn_dim = 20, c.layers = 2, c.experts = 1, c.top_k = 1;
    Generator g1(5), g2(6), gx(7);
    nn::WideNetViT<double> teacher(c, g1), student(c.dense(), g2);
    const auto names = ones::copy_matched_layers(teacher, student);
    const ones::GatherReport rep = ones::gather_ffn(teacher, student, 1.0);
    teacher.eval(), student.eval();
    const auto x = Tensor<double>::rand({2, 1, 28, 28}, gx);
    NoGrad ng;
    const double diff = max_abs_diff(teacher.forward(x), student.forward(x));
    std::printf("ones: %zu matched tensors copied, fc1 rank %lld of %lld, |teacher - student| %.3g\n", names.size(),
                (long long)rep.fc1_ranks[0], (long long)rep.full_rank, diff);
    check(diff < 1e-9, "ones: one expert gathered at lambda = 1 is the expert itself");
}

int main() {
    try {
        run_tsjt();
        run_tcd();
        run_ones();
    } catch (const std::exception& e) {
        std::printf("FAIL: %s\n", e.what());
        return 1;
    }
    return failures == 0 ? 0 : 1;
}

// decode_bench.cpp — greedy decoding throughput (tokens/s) of an nn::TransformerDecoder over an
// encoder output: moekd's full-prefix reference (the example's old path: the decoder re-run on
// the whole prefix every step), moekd's key/value-cached path (nn/decode.hpp), and a libtorch
// incremental greedy decoder with the same weights (bench/decode_bench_torch.cpp), the driver of
// all three. Conventions: /work/shared/BENCH.md.
//
// Sizes (default): post-LN, d = 256, 4 heads, ff = 1024, 6 decoder layers, vocabulary 8000 (tied
// output projection), 32 sentences of 24 source positions (a random encoder output), 24 output
// tokens per sentence (no eos: every row decodes all 24). tokens/s = 32 x 24 / the time of one
// whole greedy decode (cache setup included on both incremental sides).
// Before timing: the three sides decode from the same weights and must emit the same tokens,
// and the last step's logits of moekd's cached path and of libtorch must agree to 1e-4 relative;
// otherwise the program exits 1 after printing. Timing: warm-up, then samples alternating the
// sides (each timed run right after an untimed one of the same side: idle BLAS threads spin after
// a call), median. libtorch at ATen 1 and 2 threads, the faster reported (OpenBLAS at --threads
// on every side).
//
//   case=greedy_cached_vs_torch moekd=<cached tokens/s> torch=<best torch tokens/s> ratio=moekd/torch
//   case=greedy_cached_vs_full  moekd=<cached tokens/s> full=<full-prefix tokens/s> ratio=cached/full
//
// Build: cmake -DMOEKD_BUILD_BENCH=ON ... && cmake --build <dir> --target decode_bench
// Run:   env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ./<dir>/bench/decode_bench [--quick]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <moekd/nn.hpp>
#include <moekd/nn/decode.hpp>

// bench/decode_bench_torch.cpp
void* dec_torch_create(int64_t V, int64_t D, int64_t H, int64_t F, int64_t L, int64_t B, int64_t S, int64_t T,
                       const float* enc, const float* pos);
void dec_torch_set(void* h, const std::string& name, const std::vector<int64_t>& shape, const float* data);
void dec_torch_destroy(void* h);
void dec_torch_greedy(void* h, int64_t steps, int64_t bos, int64_t* tokens);
void dec_torch_last_logits(void* h, float* out);
void dec_torch_set_threads(int aten_threads);
std::string dec_torch_version();
extern "C" void openblas_set_num_threads(int);
extern "C" int openblas_get_num_threads(void);

using namespace moekd;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

struct Options {
    bool quick = false;
    int threads = 2, samples = 0;
    int64_t V = 8000, D = 256, H = 4, F = 1024, L = 6, B = 32, S = 24, T = 24;
};

constexpr int64_t kPad = 1, kBos = 0;

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--quick") o.quick = true;
        else if (a == "--threads" && i + 1 < argc) o.threads = std::atoi(argv[++i]);
        else if (a == "--samples" && i + 1 < argc) o.samples = std::atoi(argv[++i]);
        else if (a == "--layers" && i + 1 < argc) o.L = std::atoll(argv[++i]);
        else if (a == "--batch" && i + 1 < argc) o.B = std::atoll(argv[++i]);
        else {
            std::fprintf(stderr, "usage: %s [--quick] [--threads N] [--samples S] [--layers L] [--batch B]\n", argv[0]);
            std::exit(2);
        }
    }
    if (o.quick) o.V = 500, o.D = 64, o.F = 128, o.L = 2, o.B = 4, o.S = 7, o.T = 8;
    if (o.samples <= 0) o.samples = o.quick ? 1 : 7;
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    openblas_set_num_threads(o.threads);
    moekd::set_num_threads(o.threads);
    const char* core = std::getenv("OPENBLAS_CORETYPE");
    const char* l2 = std::getenv("OPENBLAS_L2_SIZE");
    std::printf("# decode_bench: greedy decoding, post-LN decoder d=%lld heads=%lld ff=%lld layers=%lld vocab=%lld, "
                "%lld sentences x %lld source positions, %lld output tokens each; %s mode, %d samples\n",
                (long long)o.D, (long long)o.H, (long long)o.F, (long long)o.L, (long long)o.V, (long long)o.B,
                (long long)o.S, (long long)o.T, o.quick ? "quick" : "full", o.samples);
    std::printf("# threads: moekd num_threads=%d openblas=%d | torch %s: ATen 1 and 2 (faster reported)\n",
                moekd::num_threads(), openblas_get_num_threads(), dec_torch_version().c_str());
    std::printf("# env OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s (unset both for measurements, see BENCH.md)\n",
                core ? core : "(unset)", l2 ? l2 : "(unset)");

    Generator gen(2026);
    nn::LayerConfig lc;
    lc.d_model = o.D, lc.num_heads = o.H, lc.ffn_dim = o.F, lc.dropout = 0.1;
    auto emb = std::make_shared<nn::Embedding<float>>(o.V, o.D, gen, kPad, 1.0 / std::sqrt(double(o.D)));
    nn::TransformerDecoder<float> dec(lc, o.L, gen, emb, true);
    dec.eval();
    const Tensor<float> enc = Tensor<float>::randn({o.B, o.S, o.D}, gen);
    const std::vector<int64_t> limits(static_cast<size_t>(o.B), o.T);
    const nn::DecodeTokens tok{kBos, -1};  // no eos: every row decodes T tokens

    // the torch side: the same weights, the same position rows
    std::vector<float> pos(static_cast<size_t>(o.T * o.D));
    for (int64_t t = 0; t < o.T; ++t) dec.embed_positions->row(kPad + 1 + t, pos.data() + t * o.D);
    void* th = dec_torch_create(o.V, o.D, o.H, o.F, o.L, o.B, o.S, o.T, enc.data(), pos.data());
    for (auto& [name, p] : dec.named_parameters()) {
        const Tensor<float> c = p.contiguous();
        dec_torch_set(th, name, std::vector<int64_t>(c.shape().begin(), c.shape().end()), c.data());
    }

    // ---- check: the same tokens on all three sides, the same last logits ----
    const auto full = nn::greedy_decode_reference(dec, enc, Tensor<uint8_t>(), limits, tok);
    const auto cached = nn::greedy_decode(dec, enc, Tensor<uint8_t>(), limits, tok);
    std::vector<int64_t> ttok(static_cast<size_t>(o.B * o.T));
    dec_torch_set_threads(1);
    dec_torch_greedy(th, o.T, kBos, ttok.data());
    int64_t diff_full = 0, diff_torch = 0;
    for (int64_t b = 0; b < o.B; ++b)
        for (int64_t t = 0; t < o.T; ++t) {
            const int64_t c = cached[size_t(b)].at(size_t(t));
            diff_full += full[size_t(b)].at(size_t(t)) != c;
            diff_torch += ttok[size_t(b * o.T + t)] != c;
        }
    // last-step logits: moekd cached (one more run, stopping after its last step) vs torch
    double err = 0, scale = 0;
    {
        NoGrad ng;
        nn::DecoderCache<float> cache = dec.make_cache(enc, Tensor<uint8_t>(), o.T);
        Tensor<float> logits;
        for (int64_t t = 0; t < o.T; ++t) {
            Tensor<int64_t> ids = Tensor<int64_t>::empty({o.B, 1});
            for (int64_t b = 0; b < o.B; ++b) ids.data()[b] = t == 0 ? kBos : cached[size_t(b)][size_t(t - 1)];
            logits = dec.forward_step(ids, cache).contiguous();
        }
        std::vector<float> tl(static_cast<size_t>(o.B * o.V));
        dec_torch_last_logits(th, tl.data());
        for (int64_t i = 0; i < o.B * o.V; ++i) {
            err = std::max(err, double(std::abs(logits.data()[i] - tl[size_t(i)])));
            scale = std::max(scale, double(std::abs(tl[size_t(i)])));
        }
    }
    const bool agree = diff_full == 0 && diff_torch == 0 && err <= 1e-4 * scale;
    std::printf("# check: tokens differing from moekd cached: full-prefix %lld, torch %lld of %lld; last-step logits "
                "max_rel_err cached_vs_torch=%.2e -> %s\n",
                (long long)diff_full, (long long)diff_torch, (long long)(o.B * o.T), err / scale,
                agree ? "agree" : "DISAGREE");
    if (!agree) return 1;

    // ---- timing ----
    auto run_full = [&] { (void)nn::greedy_decode_reference(dec, enc, Tensor<uint8_t>(), limits, tok); };
    auto run_cached = [&] { (void)nn::greedy_decode(dec, enc, Tensor<uint8_t>(), limits, tok); };
    auto run_torch = [&](int t) {
        dec_torch_set_threads(t);
        dec_torch_greedy(th, o.T, kBos, ttok.data());
    };
    auto timed = [](auto&& f) {
        f();  // untimed: the side's threads and buffers warm
        const auto t0 = Clock::now();
        f();
        return seconds_since(t0);
    };
    std::vector<double> sf, sc, st1, st2;
    for (int i = 0; i < o.samples; ++i) {
        sc.push_back(timed(run_cached));
        st1.push_back(timed([&] { run_torch(1); }));
        st2.push_back(timed([&] { run_torch(2); }));
        if (i < (o.samples + 1) / 2) sf.push_back(timed(run_full));  // slow: fewer samples (an odd count)
    }
    dec_torch_set_threads(1);
    const double toks = double(o.B * o.T);
    const double cached_tps = toks / median(sc), full_tps = toks / median(sf);
    const double t1 = toks / median(st1), t2 = toks / median(st2), best = std::max(t1, t2);
    std::printf("# torch tokens/s: ATen 1 thread %.0f, ATen 2 threads %.0f\n", t1, t2);
    std::printf("case=greedy_cached_vs_torch moekd=%.0f torch=%.0f unit=tokens/s ratio=%.3f torch_best_aten=%d\n",
                cached_tps, best, cached_tps / best, t1 >= t2 ? 1 : 2);
    std::printf("case=greedy_cached_vs_full moekd=%.0f full=%.0f unit=tokens/s ratio=%.3f\n", cached_tps, full_tps,
                cached_tps / full_tps);
    dec_torch_destroy(th);
    return 0;
}

// transformer_bench.hpp — what the two sides of the Transformer-layer benchmark share:
// the workload sizes, the deterministic inputs, the command line, the step timer, the memory
// probes and the one result line each measuring process prints. The moekd side lives in
// transformer_bench.cpp (which also drives the runs), the libtorch side and the numerical check in
// transformer_bench_torch.cpp. Each side is timed in its own process so that its peak resident
// memory is its own (see bench/README.md).
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

extern "C" {
// OpenBLAS (both sides link the same libopenblas)
int openblas_get_num_threads(void);
void openblas_set_num_threads(int);
char* openblas_get_corename(void);
}

namespace tbench {

/// The workload of the issue: one post-LN layer, d=256, 4 heads, ff=1024, batch 32 x 64 tokens;
/// the decoder attends over a memory of 64 encoder states.
struct Sizes {
    int64_t B = 32, T = 64, S = 64, D = 256, H = 4, F = 1024;
    int64_t tokens() const { return B * T; }
};

enum class Case { Encoder, Decoder };
inline const char* case_name(Case c) { return c == Case::Encoder ? "encoder" : "decoder"; }

/// Adam hyper-parameters of the timed step (the same on both sides).
constexpr double kLr = 1e-4, kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8;

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

inline double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

/// Deterministic N(0, 1) * scale values (the same on both sides, whatever the library).
inline std::vector<float> normal_values(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = d(gen) * scale;
    return v;
}

/// The inputs of one step: x (B, T, D) the layer input, mem (B, S, D) the encoder output (decoder
/// only), gy (B, T, D) the upstream gradient dL/dy (the step runs y.backward(gy): the loss is
/// L = sum(y * gy), so no loss op is timed on either side).
struct Inputs {
    std::vector<float> x, mem, gy;
};
inline Inputs make_inputs(const Sizes& s) {
    Inputs in;
    in.x = normal_values(size_t(s.B * s.T * s.D), 11);
    in.mem = normal_values(size_t(s.B * s.S * s.D), 12);
    in.gy = normal_values(size_t(s.B * s.T * s.D), 13, 1.0f / float(s.B * s.T));
    return in;
}

/// max |x - y| / max |y|
inline double max_rel_err(const float* x, const float* y, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; ++i) {
        num = std::max(num, std::abs(double(x[i]) - double(y[i])));
        den = std::max(den, std::abs(double(y[i])));
    }
    return den > 0 ? num / den : num;
}

/// A "VmXXX:  1234 kB" field of /proc/self/status, in KiB (0 when unreadable).
inline long proc_status_kb(const char* field) {
    std::ifstream f("/proc/self/status");
    std::string line;
    const size_t n = std::strlen(field);
    while (std::getline(f, line))
        if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':') return std::atol(line.c_str() + n + 1);
    return 0;
}
/// Peak resident set of this process so far (KiB): getrusage ru_maxrss.
inline long peak_rss_kb() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

// ---- command line of a measuring process --------------------------------------------------------
struct Options {
    std::string side;             // "moekd" or "torch" (empty: the driver / the check)
    Case which = Case::Encoder;
    int steps = 20;               // timed steps (the median is reported)
    int warmup = 3;               // untimed steps first
    int aten_threads = 1;         // torch side: at::set_num_threads
    int blas_threads = 2;         // both sides: openblas_set_num_threads
    std::string variant = "module";  // torch side: "module" (torch::nn layers) or "manual"
    // driver
    int rounds = 5;               // driver: timed rounds (one process per side and kept setting each)
    bool quick = false;           // driver / check: a few steps, for ctest
    bool check_only = false;
    // driver: ATen x OpenBLAS thread settings to race ('p': OMP_WAIT_POLICY=passive)
    std::string torch_configs = "1x2,2x2,2x2p,2x1";
    std::string cases = "encoder,decoder";
    bool bf16 = false;            // --precision bf16: moekd::Autocast vs torch's CPU autocast, both sides
};

inline Case parse_case(const std::string& s) {
    if (s == "encoder") return Case::Encoder;
    if (s == "decoder") return Case::Decoder;
    std::fprintf(stderr, "unknown case '%s' (encoder|decoder)\n", s.c_str());
    std::exit(2);
}

inline Options parse_options(int argc, char** argv, const char* usage) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "%s needs a value\n%s", a.c_str(), usage);
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--side") o.side = next();
        else if (a == "--case") o.which = parse_case(next());
        else if (a == "--steps") o.steps = std::atoi(next().c_str());
        else if (a == "--warmup") o.warmup = std::atoi(next().c_str());
        else if (a == "--aten-threads") o.aten_threads = std::atoi(next().c_str());
        else if (a == "--blas-threads") o.blas_threads = std::atoi(next().c_str());
        else if (a == "--variant") o.variant = next();
        else if (a == "--rounds") o.rounds = std::atoi(next().c_str());
        else if (a == "--torch-threads") o.torch_configs = next();
        else if (a == "--cases") o.cases = next();
        else if (a == "--quick") o.quick = true;
        else if (a == "--check") o.check_only = true;
        else if (a == "--precision") {
            const std::string p = next();
            if (p != "fp32" && p != "bf16") {
                std::fprintf(stderr, "--precision %s: choose fp32 or bf16\n%s", p.c_str(), usage);
                std::exit(2);
            }
            o.bf16 = p == "bf16";
        }
        else {
            std::fprintf(stderr, "%s", usage);
            std::exit(2);
        }
    }
    return o;
}

/// What a measuring process prints last (the driver parses it):
/// result side=.. case=.. variant=.. aten_threads=.. blas_threads=.. step_ms=.. tokens_per_s=..
///        base_rss_kb=.. peak_rss_kb=.. [alloc_peak_kb=.. alloc_cached_kb=..]
struct Result {
    std::string side, variant;
    Case which = Case::Encoder;
    int aten_threads = 0, blas_threads = 0;
    double step_ms = 0, tokens_per_s = 0;
    long base_rss_kb = 0, peak_rss_kb = 0;
    long alloc_peak_kb = -1, alloc_cached_kb = -1;  // moekd's CpuAllocator, -1 for torch
};

inline void print_result(const Result& r) {
    std::printf("result side=%s case=%s variant=%s aten_threads=%d blas_threads=%d step_ms=%.3f tokens_per_s=%.1f "
                "base_rss_kb=%ld peak_rss_kb=%ld alloc_peak_kb=%ld alloc_cached_kb=%ld\n",
                r.side.c_str(), case_name(r.which), r.variant.c_str(), r.aten_threads, r.blas_threads, r.step_ms,
                r.tokens_per_s, r.base_rss_kb, r.peak_rss_kb, r.alloc_peak_kb, r.alloc_cached_kb);
    std::fflush(stdout);
}

/// Times `step` (one full training step): `warmup` untimed calls, then `steps` timed ones; fills
/// step_ms (median) and tokens_per_s.
template <class F>
void time_steps(const Options& o, const Sizes& s, Result& r, F&& step) {
    for (int i = 0; i < o.warmup; ++i) step();
    std::vector<double> t;
    for (int i = 0; i < o.steps; ++i) {
        const auto t0 = Clock::now();
        step();
        t.push_back(seconds_since(t0));
    }
    const double m = median(t);
    r.step_ms = m * 1e3;
    r.tokens_per_s = m > 0 ? double(s.tokens()) / m : 0;
}

}  // namespace tbench

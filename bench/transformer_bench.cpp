// transformer_bench.cpp — one post-LN Transformer layer training step (forward + backward + Adam),
// moekd vs libtorch: an encoder layer and a decoder layer with cross-attention, d=256, 4 heads,
// ff=1024, batch 32 x 64 tokens (the decoder's memory: 64 tokens). See bench/README.md.
//
// Without --side this program is the driver. It runs transformer_bench_torch --check (the two
// sides agree on the same weights, or nothing is timed), then for each case:
//   1. selection: one process per torch setting (every ATen x OpenBLAS setting of --torch-threads,
//      both torch formulations); the two fastest are kept;
//   2. --rounds timed rounds, each one process of moekd (this program with --side moekd) and one
//      of each kept torch setting, back to back, the order rotated from round to round;
// and prints, against the kept torch setting with the best median,
//   case=<case>_layer_train moekd=<tokens/s> torch=<tokens/s> unit=tokens/s ratio=<moekd/torch>
//   case=<case>_layer_peak_rss moekd=<MiB> torch=<MiB> unit=MiB ratio=<torch/moekd>
//   case=<case>_layer_peak_rss_above_start moekd=<MiB> torch=<MiB> unit=MiB ratio=<torch/moekd>
// (tokens/s: median over rounds of each process's median step). Each side runs in its own process
// so that its peak RSS (the child's ru_maxrss from wait4) is its own.
//   --side moekd --case encoder|decoder [--blas-threads N] [--steps S] [--warmup W]
// times the moekd step alone and prints the `result ...` line the driver reads.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <sstream>

#include "transformer_bench_moekd.hpp"

namespace {

using namespace tbench;

const char* kUsage =
    "usage: transformer_bench [--rounds R] [--steps S] [--warmup W] [--torch-threads 1x2,2x2,2x2p,2x1]\n"
    "                         [--blas-threads N (moekd side, default 2)] [--cases encoder,decoder] [--quick] [--check]\n"
    "                         [--precision fp32|bf16 (bf16: moekd::Autocast vs torch's CPU autocast)]\n"
    "       transformer_bench --side moekd --case encoder|decoder [--blas-threads N] [--steps S] [--warmup W]\n"
    "                         [--precision fp32|bf16]\n";

int run_moekd_side(const Options& o, long base_rss) {
    openblas_set_num_threads(o.blas_threads);
    const Sizes s;
    Result r;
    r.side = "moekd";
    r.variant = "nn";
    r.which = o.which;
    r.aten_threads = 0;
    r.blas_threads = openblas_get_num_threads();
    r.base_rss_kb = base_rss;
    {
        MoekdSide m(s, o.which, make_inputs(s));
        m.bf16 = o.bf16;
        time_steps(o, s, r, [&] { m.step(); });
        const auto st = moekd::CpuAllocator::instance().stats();
        r.alloc_peak_kb = long(st.peak_bytes_in_use / 1024);
        r.alloc_cached_kb = long((st.bytes_cached + st.bytes_in_use) / 1024);
    }
    r.peak_rss_kb = peak_rss_kb();
    print_result(r);
    return 0;
}

// ---- the driver ------------------------------------------------------------------------------------

std::string self_dir() {
    char buf[4096];
    const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    if (n <= 0) return ".";
    std::string p(buf, size_t(n));
    return p.substr(0, p.find_last_of('/'));
}

struct Child {
    int status = -1;
    long maxrss_kb = 0;  // the child's ru_maxrss (wait4)
    std::string out;
};

/// Runs argv with extra environment variables; captures stdout, passes stderr through.
Child run_child(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
    Child c;
    int fd[2];
    if (pipe(fd) != 0) return c;
    const pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        for (auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
        std::vector<char*> a;
        for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
        a.push_back(nullptr);
        execv(a[0], a.data());
        std::perror(a[0]);
        _exit(127);
    }
    close(fd[1]);
    char buf[4096];
    ssize_t n;
    while ((n = read(fd[0], buf, sizeof(buf))) > 0) c.out.append(buf, size_t(n));
    close(fd[0]);
    rusage ru{};
    wait4(pid, &c.status, 0, &ru);
    c.maxrss_kb = ru.ru_maxrss;
    return c;
}

/// key=value fields of the `result ...` line of a child's output (empty when none).
std::map<std::string, std::string> parse_result(const std::string& out) {
    std::map<std::string, std::string> f;
    std::istringstream is(out);
    std::string line;
    while (std::getline(is, line)) {
        if (line.rfind("result ", 0) != 0) continue;
        std::istringstream ls(line.substr(7));
        std::string kv;
        while (ls >> kv) {
            const size_t eq = kv.find('=');
            if (eq != std::string::npos) f[kv.substr(0, eq)] = kv.substr(eq + 1);
        }
    }
    return f;
}

/// One side at one setting: its per-round step medians and memory.
struct Series {
    explicit Series(std::string l) : label(std::move(l)) {}
    std::string label;  // "moekd blas=2" / "torch module aten=1 blas=2"
    std::vector<double> tokens_per_s;
    std::vector<double> peak_rss_mib, base_rss_mib;
    std::vector<double> alloc_peak_mib, alloc_cached_mib;
    double tps() const { return median(tokens_per_s); }
};

bool measure(Series& se, const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
    const Child c = run_child(argv, env);
    const auto f = parse_result(c.out);
    if (c.status != 0 || f.empty()) {
        std::printf("# FAILED: %s (status %d)\n%s", se.label.c_str(), c.status, c.out.c_str());
        return false;
    }
    se.tokens_per_s.push_back(std::atof(f.at("tokens_per_s").c_str()));
    se.peak_rss_mib.push_back(double(c.maxrss_kb) / 1024.0);
    se.base_rss_mib.push_back(std::atof(f.at("base_rss_kb").c_str()) / 1024.0);
    se.alloc_peak_mib.push_back(std::atof(f.at("alloc_peak_kb").c_str()) / 1024.0);
    se.alloc_cached_mib.push_back(std::atof(f.at("alloc_cached_kb").c_str()) / 1024.0);
    return true;
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::istringstream is(s);
    std::string t;
    while (std::getline(is, t, sep))
        if (!t.empty()) out.push_back(t);
    return out;
}

int run_driver(Options o) {
    if (o.quick) {
        o.rounds = 1;
        o.steps = 2;
        o.warmup = 1;
        o.torch_configs = "1x2";
    }
    const std::string dir = self_dir();
    const std::string me = dir + "/transformer_bench", torch_bin = dir + "/transformer_bench_torch";
    const bool have_torch = access(torch_bin.c_str(), X_OK) == 0;
    const char* core = openblas_get_corename();
    const char* ct = std::getenv("OPENBLAS_CORETYPE");
    const char* l2 = std::getenv("OPENBLAS_L2_SIZE");
    const Sizes s;
    std::printf("# transformer_bench: post-LN layer training step (forward + backward + Adam), B=%lld T=%lld "
                "S=%lld D=%lld H=%lld F=%lld, dropout 0, ReLU\n",
                (long long)s.B, (long long)s.T, (long long)s.S, (long long)s.D, (long long)s.H, (long long)s.F);
    std::printf("# openblas core=%s; env OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s (unset both for measurements)\n",
                core ? core : "?", ct ? ct : "(unset)", l2 ? l2 : "(unset)");
    std::printf("# rounds=%d steps=%d warmup=%d; moekd: OpenBLAS threads %d (no OpenMP); torch settings (ATen x "
                "OpenBLAS, p = OMP_WAIT_POLICY=passive): %s, formulations module + manual\n",
                o.rounds, o.steps, o.warmup, o.blas_threads, o.torch_configs.c_str());
    std::fflush(stdout);

    bool ok = true;
    if (have_torch) {  // verify before timing
        std::vector<std::string> check{torch_bin, "--check"};
        if (o.bf16) check.insert(check.end(), {"--precision", "bf16"});
        const Child c = run_child(check, {{"OMP_NUM_THREADS", "1"}});
        std::printf("%s", c.out.c_str());
        if (c.status != 0) {
            std::printf("# check FAILED: the two sides disagree; not timing\n");
            return 1;
        }
    } else {
        std::printf("# transformer_bench_torch not built (no Torch found): moekd side only, no check\n");
    }
    std::fflush(stdout);
    if (o.check_only) return 0;

    const std::string steps = std::to_string(o.steps), warmup = std::to_string(o.warmup);
    const char* sfx = o.bf16 ? "_bf16" : "";  // case names: encoder_layer_train_bf16, ...
    for (const std::string& cname : split(o.cases, ',')) {
        parse_case(cname);
        Series mk("moekd blas=" + std::to_string(o.blas_threads));
        std::vector<Series> tr;
        std::vector<std::pair<std::vector<std::string>, std::map<std::string, std::string>>> torch_runs;
        if (have_torch)
            for (std::string cfg : split(o.torch_configs, ',')) {
                // "AxB": ATen A threads, OpenBLAS B threads; a trailing 'p' adds OMP_WAIT_POLICY=passive
                // (ATen's idle OpenMP threads sleep instead of spinning against OpenBLAS's threads)
                const bool passive = !cfg.empty() && cfg.back() == 'p';
                if (passive) cfg.pop_back();
                const size_t xpos = cfg.find('x');
                const std::string at = cfg.substr(0, xpos), bl = xpos == std::string::npos ? "2" : cfg.substr(xpos + 1);
                std::map<std::string, std::string> env{{"OMP_NUM_THREADS", at}, {"OPENBLAS_NUM_THREADS", bl}};
                if (passive) env["OMP_WAIT_POLICY"] = "passive";
                for (const char* variant : {"module", "manual"}) {
                    tr.emplace_back(std::string("torch ") + variant + " aten=" + at + " blas=" + bl +
                                    (passive ? " omp=passive" : ""));
                    torch_runs.push_back({{torch_bin, "--side", "torch", "--case", cname, "--variant", variant,
                                           "--aten-threads", at, "--blas-threads", bl, "--steps", steps, "--warmup", warmup,
                                           "--precision", o.bf16 ? "bf16" : "fp32"},
                                          env});
                }
            }
        const std::string mb = std::to_string(o.blas_threads);
        const std::vector<std::string> moekd_argv{me, "--side", "moekd", "--case", cname, "--blas-threads", mb,
                                                  "--steps", steps, "--warmup", warmup, "--precision",
                                                  o.bf16 ? "bf16" : "fp32"};
        const std::map<std::string, std::string> moekd_env{{"OMP_NUM_THREADS", "2"}, {"OPENBLAS_NUM_THREADS", mb}};
        auto line = [&](const Series& se) {
            std::printf("#   %-40s tokens/s median=%9.1f runs=[", se.label.c_str(), se.tps());
            for (size_t i = 0; i < se.tokens_per_s.size(); ++i) std::printf("%s%.0f", i ? " " : "", se.tokens_per_s[i]);
            std::printf("] peak_rss=%.1f MiB start_rss=%.1f MiB", median(se.peak_rss_mib), median(se.base_rss_mib));
            if (!se.alloc_peak_mib.empty() && se.alloc_peak_mib[0] >= 0)
                std::printf(" allocator_peak_in_use=%.1f MiB allocator_held_at_end=%.1f MiB", median(se.alloc_peak_mib),
                            median(se.alloc_cached_mib));
            std::printf("\n");
        };
        std::printf("# case %s:\n", cname.c_str());
        // Phase 1 (more than two torch settings): every setting once, to keep the two fastest.
        std::vector<size_t> keep;
        for (size_t i = 0; i < tr.size(); ++i) keep.push_back(i);
        if (tr.size() > 2) {
            std::vector<Series> sel;
            for (size_t i = 0; i < tr.size(); ++i) {
                sel.emplace_back(tr[i].label);
                ok = measure(sel[i], torch_runs[i].first, torch_runs[i].second) && ok;
            }
            std::printf("#  selection (one process per torch setting):\n");
            for (const Series& se : sel) line(se);
            std::sort(keep.begin(), keep.end(), [&](size_t a, size_t b) { return sel[a].tps() > sel[b].tps(); });
            keep.resize(2);
        }
        // Phase 2: rounds of moekd and the kept torch settings back to back, the order rotated each
        // round, so that each round's processes share the machine's load of the moment.
        std::vector<double> paired;  // per round: moekd / fastest torch of that round
        for (int r = 0; r < o.rounds; ++r) {
            const size_t n = 1 + keep.size();
            std::vector<double> got(n, 0.0);
            for (size_t j = 0; j < n; ++j) {
                const size_t k = (j + size_t(r)) % n;
                Series& se = k == 0 ? mk : tr[keep[k - 1]];
                const bool good = k == 0 ? measure(se, moekd_argv, moekd_env)
                                         : measure(se, torch_runs[keep[k - 1]].first, torch_runs[keep[k - 1]].second);
                ok = good && ok;
                if (good) got[k] = se.tokens_per_s.back();
            }
            const double tbest = keep.empty() ? 0.0 : *std::max_element(got.begin() + 1, got.end());
            if (got[0] > 0 && tbest > 0) paired.push_back(got[0] / tbest);
        }
        std::printf("#  timed rounds:\n");
        line(mk);
        const Series* best = nullptr;
        for (size_t i : keep) {
            line(tr[i]);
            if (!tr[i].tokens_per_s.empty() && (!best || tr[i].tps() > best->tps())) best = &tr[i];
        }
        if (best && !mk.tokens_per_s.empty()) {
            std::printf("# fastest torch: %s; per-round ratios moekd / fastest torch of the round: [", best->label.c_str());
            for (size_t i = 0; i < paired.size(); ++i) std::printf("%s%.3f", i ? " " : "", paired[i]);
            std::printf("] median=%.3f\n", median(paired));
            std::printf("case=%s_layer_train%s moekd=%.1f torch=%.1f unit=tokens/s ratio=%.3f\n", cname.c_str(), sfx, mk.tps(),
                        best->tps(), mk.tps() / best->tps());
            // memory: lower is better, so the ratio is torch over moekd (higher is better, as above)
            const double mm = median(mk.peak_rss_mib), tm = median(best->peak_rss_mib);
            std::printf("case=%s_layer_peak_rss%s moekd=%.1f torch=%.1f unit=MiB ratio=%.3f\n", cname.c_str(), sfx, mm, tm, tm / mm);
            const double mg = mm - median(mk.base_rss_mib), tg = tm - median(best->base_rss_mib);
            std::printf("case=%s_layer_peak_rss_above_start%s moekd=%.1f torch=%.1f unit=MiB ratio=%.3f\n", cname.c_str(),
                        sfx, mg, tg, tg / mg);
        } else if (!mk.tokens_per_s.empty()) {
            std::printf("case=%s_layer_train%s moekd=%.1f torch=n/a unit=tokens/s ratio=n/a\n", cname.c_str(), sfx, mk.tps());
        }
        std::fflush(stdout);
    }
    return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    const long base_rss = proc_status_kb("VmRSS");
    const Options o = parse_options(argc, argv, kUsage);
    if (o.side == "moekd") return run_moekd_side(o, base_rss);
    if (!o.side.empty()) {
        std::fprintf(stderr, "%s", kUsage);
        return 2;
    }
    return run_driver(o);
}

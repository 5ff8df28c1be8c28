// ones_vit — OneS ("One Student Knows All Experts Know: From Sparse to Dense") on real
// Fashion-MNIST: train a WideNet-style MoE ViT teacher, fold its experts into a dense ViT of the
// same architecture (knowledge gathering: matched-layer copy + SVD of each expert, eq. 10-14),
// then distil (L = alpha * CE + (1 - alpha) * KD, eq. 15-17) with LAMB and linear decay; compare
// with the paper's baselines and print a results table whose every number comes from this run.
//
//   ones_vit                                   teacher, dense baseline, OneS (small, < 10 min on 2 cores)
//   ones_vit --runs all                        + dense-long (the paper's "comparable iterations" control),
//                                              data-aware KG, Distill (the paper's w/o KG, see below),
//                                              Switch, OneS w/o KD, Switch w/o KD
//   ones_vit --save-teacher t.safetensors      keep the teacher;  --teacher t.safetensors  reuse it
//
// Defaults follow the paper's ImageNet setting (Table 6, L. 410-424 of its text) where our scale
// allows: alpha 0.25 (soft KD; 0.5 for --kd hard, L. 180), lambda 0.75, warmup 10% of the steps,
// students initialised from the teacher at 0.4x the teacher's peak lr (0.004 vs WideNet's 0.01,
// L. 214, 424), runs from random initialisation (dense, dense-long, distill) at the teacher's lr.
//
// Outputs in --out: log.jsonl (one line per epoch and event), results.md, results.json,
// curves.csv and curves.svg (test accuracy vs epoch). Exit status: 1 on error, 2 when the OneS
// student (or the last run) ends below --min-acc.
//
//   ones_vit --device cuda                     the same runs with the models, batches, losses, the SVD
//                                              gathering (cuSOLVER) and evaluation on the GPU; the same
//                                              outputs. Without a GPU (or in a build without the CUDA
//                                              backend): a one-line error naming the reason, exit 1.
//                                              ones_vit_emu is the same program on the emulated device (CI).
//   mpirun -np 2 ones_vit --batch 64           data parallel (see train.hpp): every rank runs the
//                                              same program; rank 0 alone prints, writes --out
//                                              and --save-teacher, and measures throughput
//
// Checked before any training (issue 16): every numeric flag (an error names it), the output
// paths (a FIFO, a device node or a directory where a file goes is refused; symlinks are
// followed), every label in 0-9. Every write is checked (a full disk is an error naming the
// file, and no "written to" line). A --teacher file records what it was trained on (model flags,
// teacher epochs / lr / batch / augmentation, seed, and a hash of the training images it used);
// a teacher trained on other data or flags is an error listing the differences.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <filesystem>
#include <set>
#include <sstream>

#include <moekd/data/cifar.hpp>
#include <moekd/dist/collective.hpp>
#include <moekd/dist/init.hpp>
#include <moekd/io/atomic_file.hpp>
#include <moekd/io/safetensors.hpp>
#include <moekd/train/log.hpp>
#if defined(MOEKD_CUDA) && MOEKD_CUDA
#include <moekd/cuda.hpp>  // the CUDA backend (or its emulation): fills the ops' device table
#endif

#include "cli.hpp"
#include "report.hpp"
#include "runs.hpp"
#include "teacher.hpp"
#include "train.hpp"
#include "widenet.hpp"

using namespace moekd;
using namespace ones_vit;

namespace {

/// --device: refused before any data is read, with the reason in one line (0: go on).
int check_device(Device dev, const dist::Communicator& comm) {
    if (dev != Device::CUDA) return 0;
    const bool main_rank = comm.rank() == 0;
#if defined(MOEKD_CUDA) && MOEKD_CUDA
    if (cuda::device_count() == 0) {
        if (main_rank) std::fprintf(stderr, "ones_vit: error: --device cuda: no CUDA device (%s)\n", cuda::no_device_reason().c_str());
        return 1;
    }
    if (comm.size() > 1) {
        if (main_rank) std::fprintf(stderr, "ones_vit: error: --device cuda runs as one process (data parallel over NCCL is not wired into ones_vit yet)\n");
        return 1;
    }
    return 0;
#else
    if (main_rank) std::fprintf(stderr, "ones_vit: error: --device cuda: this build has no CUDA backend (configure with -DMOEKD_CUDA=ON on a machine with nvcc)\n");
    return 1;
#endif
}

}  // namespace

int main(int argc, char** argv) {
    std::shared_ptr<dist::Communicator> comm;
    try {
        comm = dist::init(argc, argv);  // MpiComm under mpirun, else one process
    } catch (const std::exception& e) {
        std::fprintf(stderr, "ones_vit: error: %s\n", e.what());
        return 1;
    }
    const bool main_rank = comm->rank() == 0;
    CLI::App app{"ones_vit: OneS knowledge integration (SVD knowledge gathering + distillation) from an MoE ViT "
                 "into a dense ViT, on Fashion-MNIST"};
    Options o;
    add_flags(app, o);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return main_rank ? app.exit(e) : (e.get_exit_code() == 0 ? 0 : 1);
    }
    const Device dev = o.device_name == "cuda" ? Device::CUDA : Device::CPU;
    if (const int rc = check_device(dev, *comm)) return rc;
    o.so.precision = o.to.precision = parse_precision(o.precision);  // the training step's products
    if (o.so.precision == Precision::bf16) {
        const Bf16Support s = bf16_support(dev);  // oneDNN on the CPU, cuBLAS on a GPU
        if (!s.ok) o.so.precision = o.to.precision = Precision::fp32;
        if (main_rank) std::printf(s.ok ? "precision: bf16 (%s)\n" : "precision: bf16 asked for, but %s: training in fp32\n", s.why.c_str());
    }
    if (!main_rank && !std::freopen("/dev/null", "w", stdout)) return 1;  // rank 0 alone prints

    try {
        const auto t_start = Clock::now();
        WideNetConfig& cfg = o.cfg;
        const TrainOptions& to = o.to;
        const TrainOptions& so = o.so;
        MOEKD_CHECK(o.lambda > 0.0 && o.lambda <= 1.0, "--lambda ", o.lambda,
                    " is outside (0, 1]; it is the fraction of each expert's singular value sum to keep (eq. 12)");
        MOEKD_CHECK(cfg.top_k <= cfg.experts, "--top-k ", cfg.top_k, " is larger than --experts ", cfg.experts);
        MOEKD_CHECK(cfg.dim % cfg.heads == 0, "--heads ", cfg.heads, " does not divide --dim ", cfg.dim);
        if (main_rank) {  // refuse a FIFO / device node / directory at an output path before any work
            for (const char* f : {"log.jsonl", "results.md", "results.json", "curves.csv", "curves.svg"})
                (void)io::resolve_write_target(o.out_dir + "/" + f);
            if (!o.teacher_out.empty()) (void)io::resolve_write_target(o.teacher_out);
        }
        const std::vector<std::string> runs = parse_runs(o.runs_s);
        const std::set<std::string> want(runs.begin(), runs.end());
        const bool need_teacher =
            std::any_of(runs.begin(), runs.end(), [](auto& r) { return r != "dense" && r != "dense-long"; });
        resolve_defaults(app, o);
        o.to.comm = o.so.comm = comm;
        if (main_rank) std::filesystem::create_directories(o.out_dir);

        data::ImageSet train, test;
        std::string dir = o.dir;
        if (!o.cifar_dir.empty()) {
            auto splits = data::read_cifar10_dir(o.cifar_dir);
            train = splits.train, test = splits.test, dir = o.cifar_dir;
            cfg.image_size = data::kCifarSide, cfg.channels = data::kCifarChannels;
            if (!app.count("--patch")) cfg.patch_size = 8;
        } else {
            train = data::read_idx_pair(dir + "/train-images-idx3-ubyte.gz", dir + "/train-labels-idx1-ubyte.gz", 10);
            test = data::read_idx_pair(dir + "/t10k-images-idx3-ubyte.gz", dir + "/t10k-labels-idx1-ubyte.gz", 10);
        }
        MOEKD_CHECK(train.images.size(-1) == cfg.image_size && train.images.size(-2) == cfg.image_size,
                    "images are ", train.images.shape(), ", expected ", cfg.image_size, " x ", cfg.image_size);
        MOEKD_CHECK(cfg.image_size % cfg.patch_size == 0, "--patch ", cfg.patch_size, " does not divide the image size ",
                    cfg.image_size);
        std::printf("ones_vit: %lld train / %lld test images from %s; batch %lld x %d rank(s)\n",
                    (long long)std::min<int64_t>(so.train_limit, train.size()),
                    (long long)std::min<int64_t>(so.test_limit, test.size()), dir.c_str(), (long long)so.batch,
                    comm->size());
        std::printf("model: WideNet ViT patch %lld, D %lld, %lld heads, F %lld, %lld shared blocks; teacher %lld experts top-%lld\n",
                    (long long)cfg.patch_size, (long long)cfg.dim, (long long)cfg.heads, (long long)cfg.ffn_dim,
                    (long long)cfg.layers, (long long)cfg.experts, (long long)cfg.top_k);
        std::printf("teacher: %d epochs, LAMB lr %g; warmup %g of the steps\n", to.epochs, to.lr, so.warmup_frac);
        std::printf("students: %d epochs, LAMB lr %g (from the teacher) / %g (from scratch; dense-long %d epochs), %s KD (T %g), "
                    "alpha %g, lambda %g, KG scale %s\n", so.epochs, so.lr, o.scratch_lr, to.epochs + so.epochs,
                    o.kd_kind.c_str(), so.temperature, so.alpha, o.lambda, o.kg_scale.c_str());
        if (dev == Device::CUDA) std::printf("device: cuda (models, batches, SVD gathering and evaluation on the GPU)\n");
        std::fflush(stdout);

        train::JsonlLog jl;  // rank 0's log (every line one checked write); other ranks' is closed (nothing)
        if (main_rank) jl.open(o.out_dir + "/log.jsonl");
        auto logger = [&](const std::string& name) {
            return [&jl, name](const EpochRecord& r) {
                std::printf("  %-10s epoch %d  train loss %.4f  test acc %.4f  (%.1f s)\n", name.c_str(), r.epoch,
                            r.train_loss, r.test_acc, r.seconds);
                std::fflush(stdout);
                jl.write({{"run", name}, {"epoch", r.epoch}, {"train_loss", json_num(r.train_loss)},
                          {"test_acc", json_num(r.test_acc)}, {"seconds", json_num(r.seconds)}});
            };
        };
        std::vector<RunResult> results;
        auto finish = [&](RunResult r, WideNetViT<float>& m, const std::vector<EpochRecord>& h, double secs) {
            r.params = m.num_parameters();
            r.ffn_mflops = m.ffn_flops_per_image() / 1e6;
            r.history = h;
            r.init_acc = h.front().test_acc;
            r.acc = h.back().test_acc;
            for (auto& e : h) r.best_acc = std::max(r.best_acc, e.test_acc);
            r.train_seconds = secs;
            results.push_back(r);
        };

        // ---- teacher ---------------------------------------------------------------------------
        Generator tgen(o.seed * 1000003ULL + 1);
        WideNetViT<float> teacher(cfg, tgen);  // drawn on the CPU: a seed gives the same model on every device
        teacher.to(dev);
        double teacher_ips = 0, dense_ips = 0;
        if (need_teacher) {
            std::printf("[teacher] MoE WideNet, %lld parameters\n", (long long)teacher.num_parameters());
            const auto t0 = Clock::now();
            std::vector<EpochRecord> h;
            const std::string config = teacher_config(o, train, comm->size());
            if (!o.teacher_in.empty()) {
                load_teacher(teacher, o.teacher_in, config);
                std::printf("  loaded from %s\n", o.teacher_in.c_str());
                h.push_back({0, 0.0, accuracy(teacher, test, so.test_limit), 0.0});
                logger("teacher")(h.back());
            } else {
                h = train_model("teacher", teacher, nullptr, train, test, to, logger("teacher"));
            }
            if (!o.teacher_out.empty() && main_rank) {
                io::write_safetensors(o.teacher_out, teacher.state_dict(),
                                      {{"format", "ones_vit WideNet MoE teacher"}, {"train_config", config}});
                std::printf("  saved to %s\n", o.teacher_out.c_str());
            }
            finish(RunResult::make("MoE teacher", "random", "CE + balance", true, false), teacher, h, seconds_since(t0));
            teacher.freeze();
        }

        // ---- students and baselines -----------------------------------------------------------
        std::vector<double> freq;
        int k = 0;
        for (const std::string& run : runs) {
            if (run == "teacher") continue;
            ++k;
            Generator gen(o.seed * 1000003ULL + 100 + uint64_t(k));
            WideNetViT<float> m(cfg.dense(), gen);
            m.to(dev);
            const StudentPlan p = plan_student(run, o);
            std::printf("[%s] %s, objective %s\n", p.result.name.c_str(), p.result.init.c_str(), p.result.objective.c_str());
            const auto t0 = Clock::now();
            if (p.copy) {
                const auto names = copy_matched_layers(teacher, m);
                jl.write({{"run", run}, {"event", "copy_matched_layers"}, {"tensors", names.size()}});
            }
            if (p.gather) {
                std::vector<double> w(size_t(cfg.experts), o.kg_scale == "mean" ? 1.0 / double(cfg.experts) : 1.0);
                if (p.data_aware) {
                    if (freq.empty()) freq = routing_frequency(teacher, train, std::min<int64_t>(so.train_limit, 10000));
                    for (size_t e = 0; e < w.size(); ++e) w[e] *= double(cfg.experts) * freq[e];
                }
                const auto kt = Clock::now();
                const GatherReport g = gather_ffn(teacher, m, o.lambda, w);
                std::ostringstream rk;
                for (size_t e = 0; e < g.fc1_ranks.size(); ++e)
                    rk << (e ? " " : "") << g.fc1_ranks[e] << "/" << g.fc2_ranks[e];
                std::printf("  SVD-KG lambda %g: K_i (fc1/fc2) per expert %s of %lld; weights", o.lambda, rk.str().c_str(),
                            (long long)g.full_rank);
                for (double v : w) std::printf(" %.3f", v);
                std::printf("  (%.2f s)\n", seconds_since(kt));
                jl.write({{"run", run}, {"event", "gather"}, {"lambda", o.lambda}, {"ranks", rk.str()},
                          {"full_rank", g.full_rank}});
            }
            const auto h = train_model(run, m, p.distill ? &teacher : nullptr, train, test, p.options, logger(run));
            finish(p.result, m, h, seconds_since(t0));
        }

        // ---- inference throughput: teacher vs the dense architecture, alternating, best of 5 --
        if (main_rank && o.throughput_images > 0 && (need_teacher || want.count("dense"))) {  // no collectives from here on
            Generator g(o.seed);
            WideNetViT<float> dense_arch(cfg.dense(), g);
            dense_arch.to(dev);
            for (int r = 0; r < 5; ++r) {
                if (need_teacher) teacher_ips = std::max(teacher_ips, throughput(teacher, test, o.throughput_images, 250, 1));
                dense_ips = std::max(dense_ips, throughput(dense_arch, test, o.throughput_images, 250, 1));
            }
            for (auto& r : results) r.images_per_s = r.is_teacher ? teacher_ips : dense_ips;
        }

        // ---- report -----------------------------------------------------------------------------
        const std::string md = markdown_table(results);
        if (main_rank) {
            write_text(o.out_dir + "/results.md", md);
            write_text(o.out_dir + "/results.json", json_results(results, config_json(o)));
            write_text(o.out_dir + "/curves.csv", curves_csv(results));
            write_text(o.out_dir + "/curves.svg", curves_svg(results));
            jl.close();  // checked: a late write error is reported, not lost
        }
        if (teacher_ips > 0 && dense_ips > 0)
            std::printf("\ninference throughput (%lld test images, batch 250, best of 5 alternating): MoE teacher %.0f images/s, dense student %.0f "
                        "images/s (%.2fx)\n", (long long)std::min<int64_t>(o.throughput_images, test.size()), teacher_ips, dense_ips,
                        dense_ips / teacher_ips);
        std::printf("\n%s\nwritten to %s/ (results.md, results.json, log.jsonl, curves.csv, curves.svg); total %.1f s\n",
                    md.c_str(), o.out_dir.c_str(), seconds_since(t_start));
        double check = results.back().acc;
        for (auto& r : results)
            if (r.name == "OneS") check = r.acc;
        if (check < o.min_acc) {  // the same accuracy on every rank
            if (main_rank) std::fprintf(stderr, "ones_vit: test accuracy %.4f is below --min-acc %.4f\n", check, o.min_acc);
            return 2;
        }
    } catch (const std::exception& e) {
        return dist::report_error(*comm, "ones_vit", e);
    }
    return 0;
}

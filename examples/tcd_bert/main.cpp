// tcd_bert — transfer-capability distillation ("Improving the Downstream Performance of
// Mixture-of-Experts Transformers via Weak Vanilla Transformers", Lu et al.) on real English text
// from Debian packages: pre-train (masked LM) a vanilla BERT teacher, an MoE BERT (every FFN an
// MoE layer, top-1, KL-uniform balance loss), and the MoE BERT with TCD from the frozen teacher
// (trunk, inner and attention relation losses, moekd/losses/tcd.hpp); track held-out masked-LM
// log-likelihood per epoch; fine-tune each (full and adapters, the better of the two means over
// the seeds reported, the paper's line 182) on a GLUE-format task; evaluate masked LM out of
// distribution; print a main table at equal epochs (not one of the paper's) and tables shaped
// like the paper's Table 3 (ablation), Table 1 (pre-training-performance alignment) and Table 4
// (OOD), and draw its Figure 5 (downstream score vs pre-training epochs).
//
//   tcd_bert                                   the small default (one task, 3 fine-tuning seeds, 7 min 28 s on 2 idle cores)
//   tcd_bert --ablations --task WNGLOSS        + the ablations (T, then T+I+A at the default
//                                              lambda_A = 0, else T+I), another task
//   tcd_bert --glue-dir ~/glue/RTE --task RTE  a real GLUE task
//   tcd_bert --corpus a.txt --corpus b.txt --glue-dir ... --task ...   your own text
//   tcd_bert --device cuda                     the same runs with the models, batches, losses, fine-tuning
//                                              and evaluation on the GPU; the same outputs. Without a GPU
//                                              (or in a build without the CUDA backend): a one-line error
//                                              naming the reason, exit 1. tcd_bert_emu is the same program
//                                              on the emulated device (CI).
//   mpirun -np 2 tcd_bert                      data parallel pre-training (pretrain.hpp): each step's
//                                              --batch segments are split over the ranks; rank 0
//                                              builds the corpus/vocabulary/task files and alone
//                                              prints and writes --out (a folder all ranks see);
//                                              fine-tuning and evaluation run identically on
//                                              every rank
//
// Outputs in --out: log.jsonl, results.md, trend.svg, tasks/ (the built-in task TSVs), spm.model,
// ckpt/<run>.safetensors (each model, rewritten after every epoch). Exit status 1 on any error.
// Every run starts afresh (nothing is resumed: the outputs of an earlier run in --out are
// replaced). Checked before any work (issue 16): every numeric flag (an error names it), the
// output paths (a FIFO / device node / directory where a file goes is refused). Every write is
// checked; a full disk is an error naming the file, and the closing "total ... wrote" line is
// printed only after every output is written.
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <moekd/dist/init.hpp>
#include <moekd/io/atomic_file.hpp>
#include <moekd/io/safetensors.hpp>
#include <moekd/train/log.hpp>
#if defined(MOEKD_CUDA) && MOEKD_CUDA
#include <moekd/cuda.hpp>  // the CUDA backend (or its emulation): fills the ops' device table
#endif

#include "cli.hpp"
#include "finetune.hpp"
#include "model.hpp"
#include "prepare.hpp"
#include "pretrain.hpp"
#include "pretrained.hpp"
#include "report.hpp"
#include "runs.hpp"

using namespace tcdb;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
    std::shared_ptr<dist::Communicator> comm;
    try {
        comm = dist::init(argc, argv);  // MpiComm under mpirun, else one process
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tcd_bert: error: %s\n", e.what());
        return 1;
    }
    const bool main_rank = comm->rank() == 0;
    const int R = comm->size();
    CLI::App app{"tcd_bert: transfer-capability distillation from a vanilla BERT into an MoE BERT (masked-LM "
                 "pre-training on WordNet + fortunes, fine-tuning on a GLUE-format task)"};
    Options o;
    add_flags(app, o);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return main_rank ? app.exit(e) : (e.get_exit_code() == 0 ? 0 : 1);
    }
    const Device dev = o.device_name == "cuda" ? Device::CUDA : Device::CPU;
    if (dev == Device::CUDA) {  // refused before any data is read: say why in one line
#if defined(MOEKD_CUDA) && MOEKD_CUDA
        if (cuda::device_count() == 0) {
            if (main_rank) std::fprintf(stderr, "tcd_bert: error: --device cuda: no CUDA device (%s)\n", cuda::no_device_reason().c_str());
            return 1;
        }
        if (R > 1) {
            if (main_rank) std::fprintf(stderr, "tcd_bert: error: --device cuda runs as one process (data parallel over NCCL is not wired into tcd_bert yet)\n");
            return 1;
        }
#else
        if (main_rank) std::fprintf(stderr, "tcd_bert: error: --device cuda: this build has no CUDA backend (configure with -DMOEKD_CUDA=ON on a machine with nvcc)\n");
        return 1;
#endif
    }
    o.fo.device = dev;
    o.po.precision = o.fo.precision = parse_precision(o.precision);
    if (o.po.precision == Precision::bf16) {
        const Bf16Support s = bf16_support(dev);  // oneDNN on the CPU, cuBLAS on a GPU
        if (!s.ok) o.po.precision = o.fo.precision = Precision::fp32;
        if (main_rank) std::printf(s.ok ? "precision: bf16 (%s)\n" : "precision: bf16 asked for, but %s: training in fp32\n", s.why.c_str());
    }
    if (!main_rank && !std::freopen("/dev/null", "w", stdout)) return 1;  // rank 0 alone prints

    try {
        const auto t_start = Clock::now();
        resolve(app, o);
        const std::vector<uint64_t> seeds = parse_seeds(o.seeds_s);
        on_rank0(*comm, [&] {  // refuse a FIFO / device node / directory at an output path before any work
            for (const char* f : {"log.jsonl", "results.md", "trend.svg", "spm_train.txt"})
                (void)io::resolve_write_target(o.out_dir + "/" + f);
        });
        ModelConfig& mc = o.mc;
        ModelConfig tc = mc;
        tc.layers = o.teacher_layers > 0 ? o.teacher_layers : mc.layers;
        o.po.seed = o.seed;
        o.po.comm = comm;
        std::vector<RunRecord> runs = plan_runs(o, tc, R);  // the teacher, MoE, MoE w/ TCD (+ ablations)
        PretrainedLog from;  // --finetune-from: the earlier run's record, its flags checked before any work
        if (!o.finetune_from.empty())  // under mpirun an error is printed once (every rank reads the same files)
            on_every_rank(*comm, [&] {
                from = read_pretrained_log(o.finetune_from);
                check_pretrained_config(from, pretraining_flags(o, tc.layers));
            });

        const Prepared p = prepare(o, *comm, !app.count("--data"));
        if (!o.finetune_from.empty())
            on_every_rank(*comm, [&] {
                check_pretrained_config(from, {{"segments", "--segments (or the same corpus)", int64_t(p.train_segs.size())}});
            });
        tc.vocab = mc.vocab;
        const Task& task = p.task;
        const text::SentencePiece& sp = *p.sp;
        const auto& train_segs = p.train_segs;
        const auto& held_segs = p.held_segs;
        const EncodedTask& etask = p.etask;
        const auto& ood = p.ood;
        const auto& ood_domains = p.ood_domains;
        (void)sp;
        const std::string cap = mc.capacity_factor > 0 ? "capacity factor " + std::to_string(mc.capacity_factor) : "dropless";
        std::printf("model: BERT D %lld, %lld layers, %lld heads, FFN %lld; MoE: %lld experts top-%lld, %s, router %s, lambda_B %g; "
                    "TCD: lambda_T %g lambda_I %g lambda_A %g, %lld groups x %lld tokens\n",
                    (long long)mc.dim, (long long)mc.layers, (long long)mc.heads, (long long)mc.ffn_dim,
                    (long long)mc.experts, (long long)mc.top_k, cap.c_str(), mc.router_bias ? "W_r x + b_r" : "W_r x (no bias)", mc.lambda_b, o.lambda_t, o.lambda_i, o.lambda_a,
                    (long long)o.po.groups, (long long)o.po.group_size);
        if (o.po.l2 && o.finetune_from.empty()) std::printf("pre-training: Adam with the L2 term %g p added to the gradient (--pretrain-decay l2)\n", o.po.weight_decay);
        if (dev == Device::CUDA) std::printf("device: cuda (pre-training, fine-tuning and evaluation on the GPU)\n");
        std::fflush(stdout);


        train::JsonlLog jlog;  // rank 0's; the other ranks' stays closed (writes nothing)
        if (main_rank) jlog.open(o.out_dir + "/log.jsonl");
        auto jwrite = [&](const nlohmann::ordered_json& line) { jlog.write(line); };
        {  // the pre-training flags --finetune-from checks (one list for both), then the rest
            nlohmann::ordered_json config{{"event", "config"}, {"task", task.info.name}};
            for (const auto& [key, flag, value] : pretraining_flags(o, tc.layers)) config[key] = value;
            config["segments"] = int64_t(train_segs.size());
            const nlohmann::ordered_json rest{
                {"precision", precision_name(o.po.precision)}, {"ft_epochs", o.fo.epochs}, {"ft_lr", o.fo.lr_full},
                {"adapter_lr", o.fo.lr_adapter}, {"adapter_dim", mc.adapter_dim}, {"ft_warmup", o.fo.warmup_frac},
                {"finetune_from", o.finetune_from}};
            for (const auto& [key, value] : rest.items()) config[key] = value;
            jwrite(config);
        }
        if (!o.finetune_from.empty())
            std::printf("pre-trained models: the last checkpoints of %s (no pre-training here; fine-tuning the last epoch only)\n",
                        o.finetune_from.c_str());

        // ---- pre-training ------------------------------------------------------------------------
        std::shared_ptr<nn::BertEncoder<float>> teacher;
        for (size_t ri = 0; ri < runs.size(); ++ri) {
            RunRecord& r = runs[ri];
            Generator gen(o.seed * 1000003ULL + ri);
            auto m = make_bert(r.key == "teacher" ? tc : mc, r.moe, gen);  // drawn on the CPU: the same model on every device
            m->to(dev);
            r.params = m->num_parameters();
            PretrainOptions ro = o.po;
            ro.tcd = r.weights;
            std::printf("[%s] %s, %lld parameters%s\n", r.label.c_str(), o.finetune_from.empty() ? "pre-training" : "pre-trained",
                        (long long)r.params, r.key.rfind("tcd", 0) == 0 && o.finetune_from.empty() ? ", distilling from the frozen teacher" : "");
            std::fflush(stdout);
            if (!o.finetune_from.empty()) {  // read back and checked instead of pre-trained
                EpochLog e;
                on_every_rank(*comm, [&] {
                    const int epoch = load_pretrained(o.finetune_from, r.key, *m);
                    e = check_pretrained_ll(from, r.key, epoch, o.po.epochs, heldout_ll(*m, held_segs, mc.vocab));
                });
                std::printf("  %s/ckpt/%s.safetensors: epoch %d, held-out LL %.4f (as its log)\n", o.finetune_from.c_str(),
                            r.key.c_str(), e.epoch, e.heldout_ll);
                r.epochs = {e};
                r.snapshots = {snapshot(*m)};
                jwrite({{"event", "pretrained"}, {"run", r.key}, {"epoch", e.epoch}, {"heldout_ll", jnum(e.heldout_ll)},
                        {"checkpoint", o.finetune_from + "/ckpt/" + r.key + ".safetensors"}});
            } else {
                const std::string ckpt = o.out_dir + "/ckpt/" + r.key + ".safetensors";
                const auto t1 = Clock::now();
                r.epochs = pretrain(r.label, *m, r.key == "teacher" ? nullptr : teacher.get(), train_segs, held_segs, mc.vocab,
                                    ro, [&](const EpochLog& e) {
                                        r.snapshots.push_back(snapshot(*m));
                                        if (main_rank)
                                            io::write_safetensors(ckpt, m->state_dict(), {{"format", "tcd_bert " + r.key},
                                                                                      {"epoch", std::to_string(e.epoch)}});
                                        std::printf("  epoch %d  mlm %.4f  balance %.3g  L_T %.4f  L_I %.4f  L_A %.4f  "
                                                    "held-out LL %.4f  (%.1f s)\n",
                                                    e.epoch, e.mlm, e.balance, e.trunk, e.inner, e.attention, e.heldout_ll,
                                                    e.seconds);
                                        if (r.moe)
                                            std::printf("           routing: top-1 gate %.4f (uniform 1/E = %.4f), busiest expert "
                                                        "%.2fx the mean load, dropped %.2f%%, KL(uniform || q) %.2e\n",
                                                        e.gate, 1.0 / double(mc.experts), e.max_load, 100 * e.dropped, e.kl);
                                        std::fflush(stdout);
                                        jwrite({{"event", "pretrain_epoch"}, {"run", r.key}, {"epoch", e.epoch},
                                                  {"mlm", jnum(e.mlm)}, {"balance", jnum(e.balance)}, {"l_t", jnum(e.trunk)},
                                                  {"l_i", jnum(e.inner)}, {"l_a", jnum(e.attention)},
                                                  {"heldout_ll", jnum(e.heldout_ll)}, {"seconds", jnum(e.seconds)},
                                                  {"gate", jnum(e.gate)}, {"max_load", jnum(e.max_load)},
                                                  {"dropped", jnum(e.dropped)}, {"kl", jnum(e.kl)},
                                                  {"checkpoint", ckpt}});
                                    });
                r.pretrain_seconds = seconds_since(t1);
            }
            for (auto& [dom, segs] : ood) r.ood[dom] = heldout_ll(*m, segs, mc.vocab);
            if (!ood.empty()) {
                nlohmann::ordered_json line{{"event", "ood"}, {"run", r.key}};
                for (auto& [dom, v] : r.ood) line[dom] = jnum(v);
                jwrite(line);
            }
            if (r.key == "teacher") {
                teacher = m;
                teacher->freeze();
                teacher->eval();
            }
        }

        // ---- fine-tuning -------------------------------------------------------------------------
        std::printf("[fine-tuning] %s, %d epochs, lr %g (full) / %g (adapters of width %lld), seeds %s, modes %s%s\n",
                    task.info.name.c_str(), o.fo.epochs, o.fo.lr_full, o.fo.lr_adapter, (long long)mc.adapter_dim,
                    o.seeds_s.c_str(), o.ft_modes.c_str(), o.no_trend ? "" : "; full fine-tuning of every epoch's checkpoint for the trend");
        std::fflush(stdout);
        for (auto& r : runs) {
            for (size_t k = 0; k < r.snapshots.size(); ++k) {
                const int epoch = r.epochs[k].epoch;
                const bool last = k + 1 == r.snapshots.size();
                if (!last && o.no_trend) continue;
                const DownstreamScore d = downstream(mc, r.moe, r.snapshots[k], etask, o.fo, last ? o.ft_modes : "full", seeds);
                if (!std::isnan(d.full)) r.trend[epoch] = d.full;
                if (last) r.final = d, r.has_final = true;
                std::printf("  %-26s epoch %d  %s %s  (full %s, adapters %s; %.1f s)\n", r.label.c_str(), epoch,
                            task.info.name.c_str(), pct(d.score).c_str(), pct(d.full).c_str(), pct(d.adapters).c_str(),
                            d.seconds);
                std::fflush(stdout);
                nlohmann::ordered_json line{{"event", "finetune"}, {"run", r.key}, {"epoch", epoch}, {"task", task.info.name},
                               {"score", jnum(d.score)}, {"full", jnum(d.full)}, {"adapters", jnum(d.adapters)},
                               {"chosen", d.chosen}, {"seconds", jnum(d.seconds)}};
                for (auto& [mk, mv] : d.metrics) line[mk] = jnum(mv);
                jwrite(line);
            }
            r.snapshots.clear();
        }

        // ---- report ------------------------------------------------------------------------------
        // the order: main table (equal epochs), the paper's Table 3 (ablation), Table 1 (alignment), Table 4 (OOD)
        std::string md = table_main(runs, task.info) + "\n";
        if (o.ablations) md += table_ablation(runs, task.info) + "\n";
        if (!o.no_trend) md += table_alignment(runs, task.info) + "\n";
        if (!ood_domains.empty()) md += table_ood(runs, ood_domains) + "\n";
        std::printf("\n%s", md.c_str());
        if (main_rank) io::write_text_atomic(o.out_dir + "/results.md", md);  // checked
        if (!o.no_trend && main_rank) write_trend_svg(o.out_dir + "/trend.svg", runs, task.info);
        const double total = seconds_since(t_start);
        jwrite({{"event", "done"}, {"seconds", jnum(total)}});
        jlog.close();  // checked, before the line that says it was written
        std::printf("total %.1f s; wrote %s/results.md, log.jsonl%s\n", total, o.out_dir.c_str(),
                    o.no_trend ? "" : ", trend.svg");
    } catch (const std::exception& e) {  // a CollectiveError: printed once; else this rank ends the job
        return dist::report_error(*comm, "tcd_bert", e);
    }
    return 0;
}

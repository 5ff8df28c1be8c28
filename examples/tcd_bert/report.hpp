// report.hpp — what the TCD example prints and writes: the per-run record, a main table at equal
// pre-training epochs (not one of the paper's: its Table 1 aligns the MoE by pre-training LL, its
// Table 2 gives the MoE the teacher's plus the student's epochs), then tables shaped like the
// paper's Table 3 (TCD ablation), Table 1 (pre-training-performance alignment) and Table 4
// (out-of-distribution masked LM), a JSONL log line helper, and the Figure-5 trend plot
// (downstream score vs pre-training epochs) as SVG via moekd/io/svg_plot.hpp. Every write is
// checked (io::AppendFile for the log, atomic writes for the plot): a full disk is an error
// naming the file.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <moekd/io/atomic_file.hpp>
#include <moekd/io/json.hpp>
#include <moekd/io/svg_plot.hpp>

#include "finetune.hpp"
#include "pretrain.hpp"

namespace tcdb {

/// Everything measured for one pre-trained model.
struct RunRecord {
    std::string key, label;  // "teacher", "moe", "tcd", "tcd-t", "tcd-ti", "tcd-tia"; table label
    bool moe = false;
    tcd::TcdWeights weights{0, 0, 0};
    int64_t params = 0;
    double pretrain_seconds = 0;
    std::vector<EpochLog> epochs;
    std::vector<nn::Module<float>::StateDict> snapshots;  // after each epoch
    std::map<int, double> trend;                          // epoch -> full fine-tuning score
    DownstreamScore final;                                // last epoch, the better mode (by seed mean)
    bool has_final = false;
    std::map<std::string, double> ood;                    // domain -> held-out LL
    double final_ll() const { return epochs.empty() ? std::nan("") : epochs.back().heldout_ll; }
};

inline std::string f4(double v) {
    if (std::isnan(v)) return "-";
    char b[32];
    std::snprintf(b, sizeof b, "%.4f", v);
    return b;
}
inline std::string pct(double v) {
    if (std::isnan(v)) return "-";
    char b[32];
    std::snprintf(b, sizeof b, "%.2f", 100 * v);
    return b;
}
inline json::Value jnum(double v) { return std::isfinite(v) ? json::Value(v) : json::Value(nullptr); }

/// A Markdown table with aligned columns.
inline std::string md_table(const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows) {
    std::vector<size_t> w(head.size(), 3);
    for (size_t c = 0; c < head.size(); ++c) w[c] = std::max(w[c], head[c].size());
    for (auto& r : rows)
        for (size_t c = 0; c < r.size() && c < w.size(); ++c) w[c] = std::max(w[c], r[c].size());
    std::ostringstream os;
    auto line = [&](const std::vector<std::string>& r) {
        os << "|";
        for (size_t c = 0; c < w.size(); ++c) {
            const std::string s = c < r.size() ? r[c] : "";
            os << " " << s << std::string(w[c] - s.size(), ' ') << " |";
        }
        os << "\n";
    };
    line(head);
    os << "|";
    for (size_t c = 0; c < w.size(); ++c) os << std::string(w[c] + 2, '-') << "|";
    os << "\n";
    for (auto& r : rows) line(r);
    return os.str();
}

inline std::string metric_names(const data::GlueTaskInfo& t) {
    std::string s;
    for (auto& m : t.metrics) s += (s.empty() ? "" : "/") + m;
    return s;
}

/// The main table: the three models at equal pre-training epochs (held-out MLM log-likelihood) and the
/// downstream task. Not one of the paper's tables (see the file comment).
inline std::string table_main(const std::vector<RunRecord>& runs, const data::GlueTaskInfo& task) {
    std::vector<std::vector<std::string>> rows;
    for (auto& r : runs) {
        if (r.key != "teacher" && r.key != "moe" && r.key != "tcd") continue;
        std::string metr;
        for (auto& [k, v] : r.final.metrics) metr += (metr.empty() ? "" : " ") + k + " " + pct(v);
        rows.push_back({r.label, std::to_string(r.params), f4(r.final_ll()), r.has_final ? pct(r.final.score) : "-",
                        r.has_final ? metr : "-", pct(r.final.full), pct(r.final.adapters),
                        r.has_final ? r.final.chosen : "-"});
    }
    return "Main table — equal pre-training epochs: pre-training performance and downstream " + task.name +
           " (dev, x100; score = mean of " + metric_names(task) +
           ", the better of the full fine-tuning and adapter means over the seeds)\n\n" +
           md_table({"Model", "Params", "Held-out MLM LL", task.name, "metrics", "full FT", "adapters", "reported"}, rows);
}

/// The paper's Table 3: TCD ablation (T, T+I, T+I+A) against the MoE without TCD (ours at equal
/// epochs, the paper's at aligned pre-training LL).
inline std::string table_ablation(const std::vector<RunRecord>& runs, const data::GlueTaskInfo& task) {
    std::vector<std::vector<std::string>> rows;
    for (const char* k : {"moe", "tcd-t", "tcd-ti", "tcd", "tcd-tia"})
        for (auto& r : runs)
            if (r.key == k) {
                const auto& e = r.epochs.empty() ? EpochLog{} : r.epochs.back();
                rows.push_back({r.label, r.weights.trunk > 0 ? f4(e.trunk) : "-", r.weights.inner > 0 ? f4(e.inner) : "-",
                                r.weights.attention > 0 ? f4(e.attention) : "-", f4(r.final_ll()),
                                r.has_final ? pct(r.final.score) : "-"});
            }
    return "Table 3 — TCD ablation at equal epochs (relation losses of the last pre-training epoch; downstream " +
           task.name + ")\n\n" +
           md_table({"Model", "L_T", "L_I", "L_A", "Held-out MLM LL", task.name}, rows);
}

/// The paper's Table 1: pre-training-performance alignment — every MoE / TCD checkpoint with its held-out LL
/// and (full fine-tuning) score, and the MoE checkpoint closest in LL to the final TCD model.
inline std::string table_alignment(const std::vector<RunRecord>& runs, const data::GlueTaskInfo& task) {
    std::vector<std::vector<std::string>> rows;
    const RunRecord *moe = nullptr, *tcdr = nullptr;
    for (auto& r : runs) {
        if (r.key == "moe") moe = &r;
        if (r.key == "tcd") tcdr = &r;
        if (r.key == "teacher" || r.key == "moe" || r.key == "tcd")
            for (auto& e : r.epochs) {
                auto it = r.trend.find(e.epoch);
                rows.push_back({r.label, std::to_string(e.epoch), f4(e.heldout_ll),
                                it == r.trend.end() ? "-" : pct(it->second)});
            }
    }
    std::string out = "Table 1 — pre-training-performance alignment (held-out MLM log-likelihood per checkpoint; " +
                      task.name + " with full fine-tuning)\n\n" +
                      md_table({"Model", "Epoch", "Held-out MLM LL", task.name + " (full FT)"}, rows);
    if (moe && tcdr && !moe->epochs.empty() && !tcdr->epochs.empty()) {
        const EpochLog* best = &moe->epochs.front();
        for (auto& e : moe->epochs)
            if (std::abs(e.heldout_ll - tcdr->final_ll()) < std::abs(best->heldout_ll - tcdr->final_ll())) best = &e;
        auto a = moe->trend.find(best->epoch);
        auto b = tcdr->trend.find(tcdr->epochs.back().epoch);
        out += "\nAligned: MoE epoch " + std::to_string(best->epoch) + " (LL " + f4(best->heldout_ll) +
               ") is closest to MoE w/ TCD (LL " + f4(tcdr->final_ll()) + "); " + task.name + ": MoE " +
               (a == moe->trend.end() ? "-" : pct(a->second)) + " vs MoE w/ TCD " +
               (b == tcdr->trend.end() ? "-" : pct(b->second)) + "\n";
    }
    return out;
}

/// The paper's Table 4: masked-LM log-likelihood on out-of-distribution text.
inline std::string table_ood(const std::vector<RunRecord>& runs, const std::vector<std::string>& domains) {
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> head{"Model", "in-domain (held-out)"};
    for (auto& d : domains) head.push_back(d);
    for (auto& r : runs) {
        if (r.key != "teacher" && r.key != "moe" && r.key != "tcd") continue;
        std::vector<std::string> row{r.label, f4(r.final_ll())};
        for (auto& d : domains) row.push_back(r.ood.count(d) ? f4(r.ood.at(d)) : "-");
        rows.push_back(row);
    }
    return "Table 4 — masked-LM log-likelihood on out-of-distribution text (nats per masked token, higher is better)\n\n" +
           md_table(head, rows);
}

/// Figure 5: the downstream score after full fine-tuning vs pre-training epochs, one line per model.
inline void write_trend_svg(const std::string& path, const std::vector<RunRecord>& runs, const data::GlueTaskInfo& task) {
    io::LinePlot p;
    p.title = task.name + " dev score vs pre-training epochs (full fine-tuning)";
    p.x_label = "pre-training epoch";
    p.y_label = task.name + " (" + metric_names(task) + ") x100";
    p.x_format = "%.0f";
    const char* colors[] = {"#000000", "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd"};
    size_t i = 0;
    for (auto& r : runs) {
        io::PlotSeries s;
        s.name = r.label;
        for (auto& [e, v] : r.trend) s.x.push_back(e), s.y.push_back(100 * v);
        s.color = colors[i++ % 6];
        s.dashed = r.key == "tcd-t" || r.key == "tcd-ti" || r.key == "tcd-tia";
        if (!s.x.empty()) p.series.push_back(s);
    }
    int lo = 1 << 30, hi = 0;
    for (auto& r : runs)
        for (auto& [e, v] : r.trend) lo = std::min(lo, e), hi = std::max(hi, e);
    p.x_ticks = std::clamp(hi - lo, 1, 10);  // one tick per epoch (up to 10)
    if (!p.series.empty()) io::write_svg(path, p);
}

}  // namespace tcdb

// report.hpp — the BLEU table of the runs: printed, and written as OUT/results.md (Markdown) and
// OUT/results.json (one object per run and model). Beside the average over the directions the
// paper's two macro-averages, X→En and En→X (l.398). BLEU values are rounded to 2 decimals in
// both files (as sacreBLEU prints them), so the table and the JSON agree.
#pragma once

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <moekd/io/atomic_file.hpp>

#include "data.hpp"
#include "run.hpp"

namespace tsjt {

inline double round2(double v) { return std::round(v * 100.0) / 100.0; }

inline std::string fmt2(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2f", v);
    return b;
}

/// Prints the table; with `write` (rank 0) also OUT/results.{md,json}.
inline void write_results(bool write, const std::string& out, const std::vector<Direction>& dirs,
                          const std::vector<RunResult>& rs, bool indep) {
    std::string md = "| mode | model | params | steps | switch | ";
    for (const auto& d : dirs) md += d.name() + " | ";
    md += "X→En | En→X | avg |\n|---|---|---|---|---|";
    for (size_t i = 0; i < dirs.size() + 3; ++i) md += "---|";
    md += "\n";
    auto side = [&](const std::vector<double>& b, bool to_en) {  // mean over the directions into / out of English
        double s = 0;
        int n = 0;
        for (size_t i = 0; i < dirs.size(); ++i)
            if ((dirs[i].tgt_lang == "en") == to_en) s += b[i], ++n;
        return n ? s / n : 0.0;
    };
    nlohmann::ordered_json js = nlohmann::ordered_json::array();
    for (const RunResult& r : rs) {
        for (int which = 0; which < 2; ++which) {
            const auto& b = which ? r.bleu_dense : r.bleu_moe;
            double avg = 0;
            for (double x : b) avg += x;
            avg = b.empty() ? 0 : avg / double(b.size());
            const std::string model = which ? (indep ? "device" : "dense") : "MoE";
            md += "| " + r.mode + " | " + model + " | " + std::to_string(which ? r.params_dense : r.params_moe) + " | " +
                  std::to_string(r.steps) + " | " + (r.switch_step >= 0 ? std::to_string(r.switch_step) : "-") + " | ";
            for (double x : b) md += fmt2(x) + " | ";
            md += fmt2(side(b, true)) + " | " + fmt2(side(b, false)) + " | " + fmt2(avg) + " |\n";
            nlohmann::ordered_json bleu = nlohmann::ordered_json::object();
            for (size_t i = 0; i < dirs.size(); ++i) bleu[dirs[i].name()] = round2(b[i]);
            js.push_back({{"mode", r.mode}, {"model", which ? model : "moe"},
                          {"params", which ? r.params_dense : r.params_moe}, {"params_total", r.params_total},
                          {"steps", r.steps}, {"switch_step", r.switch_step}, {"t_sep", r.t_sep},
                          {"train_seconds", r.train_seconds}, {"precision", r.precision}, {"bleu", bleu}, {"avg_x_en", round2(side(b, true))},
                          {"avg_en_x", round2(side(b, false))}, {"avg", round2(avg)}});
        }
    }
    std::printf("\n%s", md.c_str());
    if (!write) return;
    io::write_text_atomic((std::filesystem::path(out) / "results.md").string(), md);
    io::write_text_atomic((std::filesystem::path(out) / "results.json").string(), js.dump(1) + "\n");
}

}  // namespace tsjt

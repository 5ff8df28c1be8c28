// runs.hpp — the runs ones_vit can make (--runs), and what each one is: how the dense student
// starts (random, or the teacher's matched layers with a random or an SVD-gathered FFN), its
// objective (CE, or CE + KD from the teacher), its learning rate and epochs.
//
// Names: the paper's Table 4 "w/o KG" rows repeat its Distill accuracies (73.8 / 77.3, Table 1,
// L. 201-209 vs 272-277) and "w/o KG & KD" of OneS-L repeats WideNet-L without MoE from scratch
// (76.9, L. 228; cf. L. 299 "OneS without KG and KD from scratch"): its w/o KG reads as our
// Distill, its w/o KG & KD as our Dense. So Switch is not labelled "w/o KG", and the copy-only CE
// run (no-kg-kd) is "Switch w/o KD", an ablation of ours.
#pragma once

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "cli.hpp"
#include "report.hpp"

namespace ones_vit {

inline const std::vector<std::string> kAllRuns = {"teacher", "dense",  "dense-long", "ones",    "ones-freq",
                                                  "distill", "switch", "no-kd",      "no-kg-kd"};

/// --runs: a comma list of kAllRuns' names, or "all".
inline std::vector<std::string> parse_runs(const std::string& s) {
    if (s == "all") return kAllRuns;
    std::vector<std::string> out;
    std::stringstream ss(s);
    for (std::string r; std::getline(ss, r, ',');) {
        if (r.empty()) continue;
        MOEKD_CHECK(std::find(kAllRuns.begin(), kAllRuns.end(), r) != kAllRuns.end(), "unknown run '", r,
                    "' in --runs (known: teacher, dense, dense-long, ones, ones-freq, distill, switch, no-kd, no-kg-kd, all)");
        out.push_back(r);
    }
    MOEKD_CHECK(!out.empty(), "--runs is empty");
    return out;
}

/// One student or baseline run.
struct StudentPlan {
    RunResult result;                 // its row of the table (name, init, objective)
    bool copy = false;                // start from the teacher's matched layers
    bool gather = false;              // ... and the SVD-gathered FFN
    bool data_aware = false;          // ... weighted by the teacher's routing frequencies
    bool distill = true;              // CE + KD (else CE)
    TrainOptions options;             // this run's lr and epochs
};

inline StudentPlan plan_student(const std::string& run, const Options& o) {
    StudentPlan p;
    p.options = o.so;
    if (run == "dense" || run == "dense-long" || run == "distill") p.options.lr = o.scratch_lr;  // random init
    // dense-long: the paper's "comparable iterations" control (L. 299): a dense model from scratch
    // for as many epochs as the copied layers of a copy-based student have seen (teacher + student).
    if (run == "dense-long") p.options.epochs = o.to.epochs + o.so.epochs;
    if (run == "dense") p.result = RunResult::make("Dense", "random", "CE", false, true), p.distill = false;
    else if (run == "dense-long")
        p.result = RunResult::make("Dense long (" + std::to_string(p.options.epochs) + " ep)", "random", "CE"), p.distill = false;
    else if (run == "ones") p.result = RunResult::make("OneS", "copy + SVD-KG", "CE + KD"), p.copy = p.gather = true;
    else if (run == "ones-freq")
        p.result = RunResult::make("OneS data-aware", "copy + freq-weighted SVD-KG", "CE + KD"), p.copy = p.gather = p.data_aware = true;
    else if (run == "distill") p.result = RunResult::make("Distill", "random", "CE + KD");
    else if (run == "switch") p.result = RunResult::make("Switch", "copy, random FFN", "CE + KD"), p.copy = true;
    else if (run == "no-kd") p.result = RunResult::make("OneS w/o KD", "copy + SVD-KG", "CE"), p.copy = p.gather = true, p.distill = false;
    else if (run == "no-kg-kd") p.result = RunResult::make("Switch w/o KD", "copy, random FFN", "CE"), p.copy = true, p.distill = false;
    return p;
}

}  // namespace ones_vit

// glue.hpp — readers for GLUE's TSV files, and the same TSV layout for our built-in tasks.
//
// For fine-tuning on GLUE-style tasks: it reads real GLUE directories (CoLA, SST-2, MRPC, STS-B,
// RTE, MNLI, QNLI, QQP, WNLI), and a program's own tasks written in the same TSV layout
// (write_glue_tsv; examples/tcd_bert builds FORTUNE, WNGLOSS and WNPOS this way), so the
// fine-tuning code sees one format. Columns are found as HuggingFace's glue processors
// (transformers/data/processors/glue.py) find them: fixed indices per task, label in the last
// column for MNLI/QNLI/RTE/WNLI/STS-B; CoLA has no header line, every other file has one.
// Files are split on tabs only (no quoting, as csv.reader(quotechar=None)). Every line is
// checked: wrong column count, unknown label, bad score and invalid UTF-8 are errors naming
// file:line; an empty file (or a header only) is an error too. Files are read through
// io::read_file: a missing split file or a directory in its place is an error naming the path.
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../io/atomic_file.hpp"
#include "../io/read_file.hpp"
#include "text.hpp"

namespace moekd::data {

struct GlueExample {
    std::string text_a, text_b;  // text_b empty for single-sentence tasks
    int64_t label = -1;          // class index into GlueTaskInfo::labels (-1 for regression)
    double score = 0;            // regression target (STS-B)
};

struct GlueTaskInfo {
    std::string name;
    bool pair = false, regression = false;
    std::vector<std::string> labels;   // class names in index order (empty for regression)
    std::vector<std::string> metrics;  // {"mcc"} CoLA, {"acc"} SST-2, {"f1","acc"} MRPC/QQP, ...
    bool builtin = false;              // our own task: the simple layout of write_glue_tsv
    int64_t num_labels() const { return regression ? 1 : static_cast<int64_t>(labels.size()); }
};

/// Names read_glue_split / glue_task_info accept.
inline std::vector<std::string> glue_task_names() {
    return {"CoLA", "SST-2", "MRPC", "STS-B", "RTE", "MNLI", "QNLI", "QQP", "WNLI", "FORTUNE", "WNGLOSS", "WNPOS"};
}

/// Task facts (case-insensitive name; "SST2"/"STSB" also accepted). FORTUNE's labels are the
/// fortune categories, which depend on the data: build_task (examples/tcd_bert/english.hpp) fills them in; here
/// the list is empty and read_glue_split takes them from the file.
inline GlueTaskInfo glue_task_info(const std::string& task) {
    std::string t;
    for (char c : task)
        if (c != '-' && c != '_') t.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    const std::vector<std::string> bin{"0", "1"}, ent{"entailment", "not_entailment"};
    if (t == "COLA") return {"CoLA", false, false, bin, {"mcc"}};
    if (t == "SST2") return {"SST-2", false, false, bin, {"acc"}};
    if (t == "MRPC") return {"MRPC", true, false, bin, {"f1", "acc"}};
    if (t == "STSB") return {"STS-B", true, true, {}, {"pearson", "spearman"}};
    if (t == "RTE") return {"RTE", true, false, ent, {"acc"}};
    if (t == "MNLI") return {"MNLI", true, false, {"contradiction", "entailment", "neutral"}, {"acc"}};
    if (t == "QNLI") return {"QNLI", true, false, ent, {"acc"}};
    if (t == "QQP") return {"QQP", true, false, bin, {"f1", "acc"}};
    if (t == "WNLI") return {"WNLI", true, false, bin, {"acc"}};
    if (t == "FORTUNE") return {"FORTUNE", false, false, {}, {"acc"}, true};
    if (t == "WNGLOSS") return {"WNGLOSS", true, false, bin, {"acc"}, true};
    if (t == "WNPOS") return {"WNPOS", false, false, {"noun", "verb", "adj", "adv"}, {"acc"}, true};
    std::string known;
    for (const auto& n : glue_task_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error(msg("glue: unknown task '", task, "' (known: ", known, ")"));
}

namespace detail {
inline std::vector<std::string> split_tabs(std::string_view s) {
    std::vector<std::string> out;
    size_t a = 0;
    for (;;) {
        const size_t z = s.find('\t', a);
        out.emplace_back(s.substr(a, z == std::string_view::npos ? std::string_view::npos : z - a));
        if (z == std::string_view::npos) return out;
        a = z + 1;
    }
}
// Where a task's fields sit: column index, or -1 = last column, -2 = absent.
struct GlueColumns {
    int a, b, label;
    bool header;
    int ncol; /* 0: from the header */
};
inline GlueColumns glue_columns(const GlueTaskInfo& info) {
    const std::string& n = info.name;
    if (info.builtin) return {0, info.pair ? 1 : -2, -1, true, info.pair ? 3 : 2};
    if (n == "CoLA") return {3, -2, 1, false, 4};
    if (n == "SST-2") return {0, -2, 1, true, 2};
    if (n == "MRPC") return {3, 4, 0, true, 5};
    if (n == "STS-B") return {7, 8, -1, true, 0};
    if (n == "QQP") return {3, 4, 5, true, 6};
    if (n == "MNLI") return {8, 9, -1, true, 0};
    return {1, 2, -1, true, 0};  // QNLI, RTE, WNLI: index, sentence1/question, sentence2/sentence, label
}
}  // namespace detail

/// The class names a built-in task directory lists in <dir>/labels.txt (one per line; written by
/// write_glue_tsv for built-in tasks), or {} if there is no such file. FORTUNE's categories
/// depend on the data, so its train and dev files share their label order through this file;
/// without it, labels are numbered in order of first appearance in the file read. A labels.txt
/// that exists but cannot be read (a directory, no permission) is an error naming it.
inline std::vector<std::string> read_label_names(const std::string& dir) {
    const std::string path = dir + "/labels.txt";
    const std::string why = io::unreadable_reason(path);
    if (why == "missing file") return {};
    const std::string text = io::read_file(path, "glue");  // throws naming the path
    std::vector<std::string> out;
    size_t pos = 0;
    for (std::string l; next_line(text, pos, l);) {
        if (!l.empty() && l.back() == '\r') l.pop_back();
        if (!l.empty()) out.push_back(l);
    }
    return out;
}

struct GlueSplit {
    GlueTaskInfo info;
    std::vector<GlueExample> examples;
    std::string file;     // the file read
    int64_t skipped = 0;  // lines skipped for a wrong column count (skip_malformed only)
};

/// Reads <dir>/<split>.tsv ("train", "dev"; MNLI: "dev_matched" / "dev_mismatched"; "dev" for
/// MNLI means dev_matched). Errors name file:line. skip_malformed = true skips (and counts in
/// `skipped`) data lines with a wrong column count instead of failing, as HF's QQP processor
/// does for the few broken lines of the original QQP train.tsv; every other check stays.
inline GlueSplit read_glue_split(const std::string& dir, const std::string& task, const std::string& split,
                                 bool skip_malformed = false) {
    GlueSplit out;
    out.info = glue_task_info(task);
    std::string sp = split;
    if (out.info.name == "MNLI" && sp == "dev") sp = "dev_matched";
    out.file = dir + "/" + sp + ".tsv";
    const std::string why = io::unreadable_reason(out.file);
    MOEKD_CHECK(why.empty(), "glue: cannot open '", out.file, "' (", out.info.name, " ", split, " split): ", why);
    const std::string text = io::read_file(out.file, "glue");
    const auto cols = detail::glue_columns(out.info);
    const bool fortune = out.info.name == "FORTUNE";
    if (fortune) out.info.labels = read_label_names(dir);  // empty if no labels.txt
    const bool have_list = !out.info.labels.empty();
    int ncol = cols.ncol;
    std::string line;
    int64_t lineno = 0;
    bool any_line = false;
    size_t pos = 0;
    auto where = [&]() { return out.file + ":" + std::to_string(lineno); };
    while (next_line(text, pos, line)) {
        ++lineno;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (lineno == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // UTF-8 BOM
        const auto u = check_utf8(line);
        MOEKD_CHECK(u.ok, "glue: ", where(), ": invalid UTF-8 at byte ", u.offset + 1, " (", u.reason, ")");
        any_line = true;
        auto f = detail::split_tabs(line);
        if (lineno == 1 && cols.header) {
            if (ncol == 0) ncol = static_cast<int>(f.size());
            MOEKD_CHECK(static_cast<int>(f.size()) == ncol, "glue: ", where(), ": header has ", f.size(), " columns, ",
                        out.info.name, " files have ", ncol);
            continue;
        }
        if (line.empty()) continue;  // a trailing blank line
        if (skip_malformed && static_cast<int>(f.size()) != ncol) {
            ++out.skipped;
            continue;
        }
        MOEKD_CHECK(static_cast<int>(f.size()) == ncol, "glue: ", where(), ": ", f.size(), " columns, expected ", ncol,
                    " for ", out.info.name, (cols.header ? " (as the header)" : ""));
        auto col = [&](int c) -> std::string& { return f[static_cast<size_t>(c < 0 ? ncol - 1 : c)]; };
        GlueExample ex;
        ex.text_a = col(cols.a);
        if (cols.b != -2) ex.text_b = col(cols.b);
        const std::string& lab = col(cols.label);
        if (out.info.regression) {
            char* end = nullptr;
            ex.score = std::strtod(lab.c_str(), &end);
            MOEKD_CHECK(!lab.empty() && end && *end == '\0' && std::isfinite(ex.score), "glue: ", where(),
                        ": bad score '", lab, "' (a number expected)");
        } else {
            auto it = std::find(out.info.labels.begin(), out.info.labels.end(), lab);
            if (it == out.info.labels.end() && fortune && !lab.empty() && !have_list) {  // from the data
                out.info.labels.push_back(lab);
                it = out.info.labels.end() - 1;
            }
            if (it == out.info.labels.end()) {
                std::string known;
                for (const auto& l : out.info.labels) known += (known.empty() ? "" : ", ") + l;
                throw Error(
                    msg("glue: ", where(), ": unknown label '", lab, "' for ", out.info.name, " (known: ", known, ")"));
            }
            ex.label = it - out.info.labels.begin();
        }
        out.examples.push_back(std::move(ex));
    }
    MOEKD_CHECK(any_line, "glue: '", out.file, "' is empty");
    MOEKD_CHECK(!out.examples.empty(), "glue: '", out.file, "' has no examples (header only)");
    return out;
}

/// Writes examples in the built-in layout: header "sentence\tlabel" or
/// "sentence1\tsentence2\tlabel" ("score" for regression), labels written by name. Texts must
/// hold no tab or newline (an error naming the example). For a built-in classification task it
/// also writes labels.txt (the class names in index order) next to the file.
inline void write_glue_tsv(const std::string& path, const GlueTaskInfo& info, const std::vector<GlueExample>& ex) {
    std::ostringstream s;
    s << (info.pair ? "sentence1\tsentence2\t" : "sentence\t") << (info.regression ? "score" : "label") << "\n";
    s.precision(17);
    for (size_t i = 0; i < ex.size(); ++i) {
        const auto& e = ex[i];
        for (const std::string* t : {&e.text_a, &e.text_b})
            MOEKD_CHECK(t->find_first_of("\t\n\r") == std::string::npos, "write_glue_tsv: ", path, ": example ", i,
                        " holds a tab or newline: '", *t, "'");
        MOEKD_CHECK(info.pair || e.text_b.empty(), "write_glue_tsv: ", path, ": example ", i, " has text_b but ",
                    info.name, " is a single-sentence task");
        s << e.text_a << "\t";
        if (info.pair) s << e.text_b << "\t";
        if (info.regression)
            s << e.score;
        else {
            MOEKD_CHECK(e.label >= 0 && e.label < static_cast<int64_t>(info.labels.size()), "write_glue_tsv: ", path,
                        ": example ", i, " has label ", e.label, " outside [0, ", info.labels.size(), ")");
            s << info.labels[static_cast<size_t>(e.label)];
        }
        s << "\n";
    }
    io::write_text_atomic(path, s.str());  // every write checked; errors name the file
    if (info.builtin && !info.regression) {
        const size_t slash = path.find_last_of('/');
        const std::string lp = (slash == std::string::npos ? std::string(".") : path.substr(0, slash)) + "/labels.txt";
        std::string labels;
        for (const auto& l : info.labels) labels += l + "\n";
        io::write_text_atomic(lp, labels);
    }
}

}  // namespace moekd::data

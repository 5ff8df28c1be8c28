// english_corpus.hpp — the TCD example's pre-training text: lines from WordNet glosses, usage
// examples and fortunes (or a user's --corpus files), their train / held-out split, and the
// out-of-distribution text for masked-LM evaluation (read_ood_text: C headers, gettext UI
// strings, technical prose; the paper's Table 4).
#pragma once


#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <moekd/core/error.hpp>
#include <moekd/core/random.hpp>
#include <moekd/io/read_file.hpp>
#include <moekd/data/gettext.hpp>
#include <moekd/data/glue.hpp>
#include <moekd/data/idx.hpp>
#include <moekd/data/text.hpp>
#include "english_read.hpp"

namespace tcdb::english {

using namespace moekd;
using namespace moekd::data;

/// What goes into the pre-training corpus. Each returned string is one line of text (a gloss
/// "word: definition", a usage example, or a fortune with its newlines collapsed to spaces);
/// the caller packs consecutive lines into segments of up to 128 tokens.
struct PretrainOptions {
    bool glosses = true, examples = true, fortunes = true;
    size_t min_chars = 8;         // drop shorter lines
    size_t max_chars = 2000;      // drop longer fortunes (long lyrics, stories)
    double min_text_share = 0.6;  // drop lines with fewer letters+spaces than this (ASCII art)
    // Texts to keep out of the corpus, e.g. a downstream task's dev texts (example_texts(t.dev)):
    // a gloss, example or fortune equal to one of them (whitespace collapsed) is skipped.
    std::vector<std::string> exclude;
};

inline std::vector<std::string> pretraining_lines(const std::vector<Synset>& wn, const std::vector<Fortune>& fortunes,
                                                  const PretrainOptions& o = {}) {
    std::vector<std::string> out;
    std::unordered_set<std::string> skip;
    for (const auto& e : o.exclude) skip.insert(collapse_whitespace(e));
    auto add = [&](std::string s) {
        s = collapse_whitespace(s);
        size_t text = 0;  // letters and spaces: ASCII art and tables have few
        for (char c : s) text += c == ' ' || detail::ascii_alpha(static_cast<unsigned char>(c));
        if (s.size() >= o.min_chars && s.size() <= o.max_chars &&
            text >= o.min_text_share * static_cast<double>(s.size()))
            out.push_back(std::move(s));
    };
    auto kept = [&](const std::string& t) { return skip.empty() || !skip.count(collapse_whitespace(t)); };
    for (const auto& s : wn) {
        if (o.glosses && !s.gloss.empty() && kept(s.gloss)) add((s.words.empty() ? "" : s.words[0] + ": ") + s.gloss);
        if (o.examples)
            for (const auto& e : s.examples)
                if (kept(e)) add(e);
    }
    if (o.fortunes)
        for (const auto& f : fortunes)
            if (kept(f.text)) add(f.text);
    return out;
}

/// Splits lines into (train, held-out) by a hash of each line with the seed, so the same line
/// never lands in both (duplicates follow each other) and the split does not depend on order.
struct LineSplit {
    std::vector<std::string> train, heldout;
};
inline LineSplit split_lines(const std::vector<std::string>& lines, double heldout_frac, uint64_t seed) {
    MOEKD_CHECK(heldout_frac >= 0 && heldout_frac < 1, "split_lines: heldout_frac ", heldout_frac, " not in [0, 1)");
    LineSplit s;
    for (const auto& l : lines) (detail::in_dev(l, seed, heldout_frac) ? s.heldout : s.train).push_back(l);
    return s;
}

/// Reads a user's text file as corpus lines: UTF-8 checked (error naming file:line), blank
/// lines dropped, whitespace collapsed; an empty file (no text) is an error. "-" reads stdin; a
/// pipe works; a missing file or a directory is an error naming it.
inline std::vector<std::string> read_text_lines(const std::string& path) {
    const std::string text = io::read_file(path, "read_text_lines");
    std::vector<std::string> out;
    std::string line;
    size_t pos = 0;
    for (int64_t lineno = 1; next_line(text, pos, line); ++lineno) {
        const auto u = check_utf8(line);
        MOEKD_CHECK(u.ok, "read_text_lines: ", path, ":", lineno, ": invalid UTF-8 at byte ", u.offset + 1, " (",
                    u.reason, ")");
        std::string t = collapse_whitespace(line);
        if (!t.empty()) out.push_back(std::move(t));
    }
    MOEKD_CHECK(!out.empty(), "read_text_lines: '", path, "' is empty (no text)");
    return out;
}


// ---- out-of-distribution text ---------------------------------------------------------------

/// Text from other domains for masked-LM evaluation (the paper's Table 4), read from a file or
/// a directory tree (files in sorted order):
///   "code":  C/C++ sources and headers (.h .hpp .hh .hxx .c .cc .cpp .cxx), e.g. usr/include;
///   "ui":    the English msgids of gettext .mo catalogs (3+ words, de-duplicated), e.g. usr/share/locale;
///   "prose": technical documentation (.txt .md .rst .info, also .gz; README*), e.g. usr/share/doc/git-doc.
/// Code and prose come back as paragraphs (runs of non-blank lines, whitespace collapsed, cut at
/// spaces into pieces of at most 600 bytes); prose paragraphs need 5+ words and 60% letters or
/// spaces (tables and ASCII diagrams are dropped). Repeats (licence headers) are kept once, lines
/// with invalid UTF-8 or control characters are skipped. With
/// max_segments > 0, an evenly spaced subset of that many is returned. No text: an error.
inline std::vector<std::string> read_ood_text(const std::string& path, const std::string& domain,
                                              size_t max_segments = 0) {
    MOEKD_CHECK(domain == "code" || domain == "ui" || domain == "prose", "read_ood_text: unknown domain '", domain,
                "' (code, ui, prose)");
    auto ext_of = [](const std::string& f) {
        std::string n = std::filesystem::path(f).filename().string();
        if (n.size() > 3 && n.compare(n.size() - 3, 3, ".gz") == 0) n.resize(n.size() - 3);
        const size_t dot = n.rfind('.');
        return std::pair<std::string, std::string>{n, dot == std::string::npos ? "" : n.substr(dot)};
    };
    std::vector<std::string> out;
    std::unordered_set<std::string> seen;
    auto push_piece = [&](const std::string& para) {
        if (domain == "prose") {
            size_t words = 1, good = 0;
            for (char c : para) {
                words += c == ' ';
                good += c == ' ' || detail::ascii_alpha(static_cast<unsigned char>(c));
            }
            if (words < 5 || good < 0.6 * static_cast<double>(para.size())) return;
        } else if (para.size() < 3)
            return;
        for (size_t a = 0; a < para.size();) {  // pieces of <= 600 bytes, cut at a space
            size_t b = std::min(para.size(), a + 600);
            if (b < para.size()) {
                const size_t sp = para.rfind(' ', b);
                if (sp != std::string::npos && sp > a) b = sp;
            }
            std::string piece = detail::trim(std::string_view(para).substr(a, b - a));
            if (seen.insert(piece).second) out.push_back(std::move(piece));  // licence blocks repeat
            a = b + (b < para.size() && para[b] == ' ');
        }
    };
    for (const auto& f : detail::sorted_files(path)) {
        const auto [name, ext] = ext_of(f);
        if (domain == "ui") {
            if (ext != ".mo") continue;
            for (const auto& e : read_mo(f).entries) {
                std::string s = collapse_whitespace(e.msgid);
                if (std::count(s.begin(), s.end(), ' ') >= 2 && is_valid_utf8(s) && !has_control_chars(s) &&
                    seen.insert(s).second)
                    out.push_back(std::move(s));
            }
            continue;
        }
        static const std::set<std::string> code{".h", ".hpp", ".hh", ".hxx", ".c", ".cc", ".cpp", ".cxx"};
        static const std::set<std::string> prose{".txt", ".md", ".rst", ".info"};
        const bool take =
            domain == "code" ? code.count(ext) > 0 : (prose.count(ext) > 0 || name.rfind("README", 0) == 0);
        if (!take) continue;
        const std::string text = detail::read_file_text(f, "read_ood_text");
        std::string para;
        size_t a = 0;
        while (a <= text.size()) {
            size_t b = text.find('\n', a);
            if (b == std::string::npos) b = text.size();
            std::string_view line(text.data() + a, b - a);
            const bool blank = collapse_whitespace(line).empty();
            if (is_valid_utf8(line) && !has_control_chars(line) && !blank) para += std::string(line) + " ";
            if (blank || b == text.size()) {
                para = collapse_whitespace(para);
                if (!para.empty()) push_piece(para);
                para.clear();
            }
            a = b + 1;
        }
    }
    MOEKD_CHECK(!out.empty(), "read_ood_text: no ", domain, " text found in '", path, "'");
    if (max_segments > 0 && out.size() > max_segments) {
        std::vector<std::string> sub;
        for (size_t i = 0; i < max_segments; ++i) sub.push_back(out[i * out.size() / max_segments]);
        out.swap(sub);
    }
    return out;
}

}  // namespace tcdb::english

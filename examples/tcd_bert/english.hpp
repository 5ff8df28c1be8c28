// english.hpp — real English text from Debian packages for the TCD example (its own data builders;
// the general readers it uses — GLUE TSV, MLM masking — are the library's data/glue.hpp, data/mlm.hpp).
//
// The paper pre-trains BERT on Wikipedia+BooksCorpus and fine-tunes on GLUE, which cannot be
// downloaded here (../shared/DATA.md). This header reads what Debian ships instead:
//  * WordNet 3.0 (package wordnet-base): data.{noun,verb,adj,adv}, one synset per line:
//      offset lex_filenum ss_type w_cnt(hex) word lex_id ... p_cnt pointers... [frames] | gloss
//    (wndb(5WN)); the gloss holds the definition(s) and quoted usage examples, "; "-separated.
//    Lines starting with two spaces are the license header.
//  * fortunes (package fortunes): category files of "%"-separated entries.
// From them: pretraining lines (glosses, examples, fortunes), three downstream tasks with real
// labels in GLUE's layout (build_task), and out-of-distribution text for masked-LM evaluation
// (read_ood_text: C headers, gettext UI strings, technical prose). scripts/build_tcd_corpus.sh
// unpacks all of these packages into one directory. Files are read through io::read_file: a
// missing file or a directory where a file is expected is an error naming the path; --corpus
// text may come from a pipe or stdin ("-").
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

namespace tcdb::english {

using namespace moekd;
using namespace moekd::data;

struct Synset {
    char pos = 'n';                     // n v a s r (s: adjective satellite)
    int64_t offset = 0;                 // byte offset in its data file (unique per pos)
    std::vector<std::string> words;     // lemmas, '_' -> ' ', adjective markers "(a)" removed
    std::string gloss;                  // the definition part(s) of the gloss, "; "-joined
    std::vector<std::string> examples;  // the quoted usage examples, quotes removed
};

struct Fortune {
    std::string category;  // the file name: "computers", "food", ...
    std::string text;      // the entry, lines joined by '\n', overstrikes and control chars removed
};

namespace detail {

using moekd::data::detail::ascii_alnum;
using moekd::data::detail::ascii_alpha;
using moekd::data::detail::ascii_space;
using moekd::data::detail::read_maybe_gzip;

inline std::string read_file_text(const std::string& path, const char* who) {
    if (path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0) {
        auto b = read_maybe_gzip(path);
        return std::string(b.begin(), b.end());
    }
    return io::read_file(path, who);  // errors: "<who>: '<path>': is a directory, not a file", ...
}
inline std::string trim(std::string_view s) {
    size_t a = 0, b = s.size();
    while (a < b && ascii_space(static_cast<unsigned char>(s[a]))) ++a;
    while (b > a && ascii_space(static_cast<unsigned char>(s[b - 1]))) --b;
    return std::string(s.substr(a, b - a));
}
inline std::string lower_ascii(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}
// Splits a WordNet gloss into its definition and quoted examples. ';' inside quotes is text.
inline void split_gloss(std::string_view g, std::string& def, std::vector<std::string>& examples) {
    std::vector<std::string> parts;
    std::string cur;
    bool quoted = false;
    for (char c : g) {
        if (c == '"') quoted = !quoted;
        if (c == ';' && !quoted) {
            parts.push_back(trim(cur));
            cur.clear();
            continue;
        }
        cur.push_back(c);
    }
    parts.push_back(trim(cur));
    for (auto& p : parts) {
        if (p.empty()) continue;
        if (p[0] == '"') {
            const size_t close = p.find('"', 1);  // text after the closing quote: an attribution
            std::string ex = trim(p.substr(1, close == std::string::npos ? std::string::npos : close - 1));
            if (!ex.empty()) examples.push_back(ex);
        } else {
            // some glosses give an example after a colon: `definition: "example"`
            const size_t colon = p.find(": \"");
            if (colon != std::string::npos && p.back() == '"' && p.find('"', colon + 3) == p.size() - 1) {
                examples.push_back(trim(p.substr(colon + 3, p.size() - colon - 4)));
                p = trim(p.substr(0, colon));
            }
            def += (def.empty() ? "" : "; ") + p;
        }
    }
}
// FNV-1a of a string mixed with a seed: a deterministic, platform-independent split key.
inline uint64_t hash_key(std::string_view s, uint64_t seed) {
    // (the start is a digit short of the FNV offset basis; kept: it fixes the published splits)
    uint64_t h = fnv1a64(s, 1469598103934665603ull ^ (seed * 0x9E3779B97F4A7C15ull));
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}
inline bool in_dev(std::string_view key, uint64_t seed, double dev_frac = 0.2) {
    return static_cast<double>(hash_key(key, seed) % 1000000) < dev_frac * 1e6;
}
template <class T>
void shuffle(std::vector<T>& v, Generator& g) {
    for (size_t i = v.size(); i > 1; --i)
        std::swap(v[i - 1], v[static_cast<size_t>(g.randint(0, static_cast<int64_t>(i)))]);
}
inline std::vector<std::string> sorted_files(const std::string& path) {
    namespace fs = std::filesystem;
    std::vector<std::string> out;
    MOEKD_CHECK(fs::exists(path), "read_ood_text: '", path, "' does not exist");
    if (fs::is_regular_file(path)) return {path};
    for (const auto& e : fs::recursive_directory_iterator(path, fs::directory_options::skip_permission_denied))
        if (e.is_regular_file()) out.push_back(e.path().string());
    std::sort(out.begin(), out.end());
    return out;
}
}  // namespace detail

/// Parses one line of a WordNet data file (file/lineno for errors). Returns false for license
/// header lines (two leading spaces) and blank lines.
inline bool parse_wordnet_line(std::string_view line, Synset& s, const std::string& file, int64_t lineno) {
    if (line.empty() || line.rfind("  ", 0) == 0) return false;
    auto fail = [&](const char* why) { return Error(msg("read_wordnet: ", file, ":", lineno, ": ", why)); };
    const size_t bar = line.find(" | ");
    std::string_view head = line.substr(0, bar);
    std::vector<std::string> f;
    for (size_t a = 0; a < head.size();) {
        size_t b = head.find(' ', a);
        if (b == std::string_view::npos) b = head.size();
        if (b > a) f.emplace_back(head.substr(a, b - a));
        a = b + 1;
    }
    if (f.size() < 6 || f[2].size() != 1 || std::string("nvasr").find(f[2][0]) == std::string::npos)
        throw fail("not a synset line (offset lex_filenum ss_type w_cnt word lex_id ...)");
    s = Synset{};
    s.pos = f[2][0];
    char* end = nullptr;
    s.offset = std::strtoll(f[0].c_str(), &end, 10);
    if (*end) throw fail("bad synset offset");
    const long n = std::strtol(f[3].c_str(), &end, 16);
    if (*end || n <= 0 || 4 + 2 * static_cast<size_t>(n) > f.size()) throw fail("bad word count");
    for (long i = 0; i < n; ++i) {
        std::string w = f[4 + 2 * static_cast<size_t>(i)];
        const size_t paren = w.find('(');  // adjective position marker: word(a), word(p), word(ip)
        if (paren != std::string::npos && paren > 0 && w.back() == ')') w.resize(paren);
        std::replace(w.begin(), w.end(), '_', ' ');
        s.words.push_back(w);
    }
    if (bar != std::string_view::npos) detail::split_gloss(line.substr(bar + 3), s.gloss, s.examples);
    return true;
}

/// Reads data.noun, data.verb, data.adj, data.adv from dir (all four must exist).
inline std::vector<Synset> read_wordnet(const std::string& dir) {
    std::vector<Synset> out;
    for (const char* name : {"data.noun", "data.verb", "data.adj", "data.adv"}) {
        const std::string path = dir + "/" + name;
        const std::string why = io::unreadable_reason(path);
        MOEKD_CHECK(why.empty(), "read_wordnet: cannot open '", path, "': ", why,
                    " (need data.noun/verb/adj/adv of WordNet 3.0; run scripts/build_tcd_corpus.sh or install wordnet-base)");
        const std::string text = io::read_file(path, "read_wordnet");
        std::string line;
        size_t pos = 0;
        int64_t lineno = 0, before = static_cast<int64_t>(out.size());
        while (next_line(text, pos, line)) {
            ++lineno;
            while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
            const auto u = check_utf8(line);
            MOEKD_CHECK(u.ok, "read_wordnet: ", path, ":", lineno, ": invalid UTF-8 (", u.reason, ")");
            Synset s;
            if (parse_wordnet_line(line, s, path, lineno)) out.push_back(std::move(s));
        }
        MOEKD_CHECK(static_cast<int64_t>(out.size()) > before, "read_wordnet: '", path, "' holds no synsets");
    }
    return out;
}

/// Cleans one fortune: "_\b" style overstrikes resolved (a backspace erases the previous
/// character), other control characters except newline and tab dropped, lines right-trimmed.
inline std::string clean_fortune(std::string_view s) {
    std::string out;
    for (char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '\b') {
            if (!out.empty() && static_cast<unsigned char>(out.back()) < 0x80 && out.back() != '\n') out.pop_back();
        } else if (c == '\n') {
            while (!out.empty() && (out.back() == ' ' || out.back() == '\t')) out.pop_back();
            out.push_back('\n');
        } else if (c >= 0x20 && c != 0x7F)
            out.push_back(ch);
        else if (c == '\t')
            out.push_back(ch);
    }
    return detail::trim(out);
}

/// Reads the plain category files of a fortune directory (usr/share/games/fortunes): every
/// regular file whose name has no '.' (so not the .dat indexes or the .u8 links); subdirectories
/// (the offensive "off/" set) are not entered. Entries are separated by lines "%". A file with
/// invalid UTF-8 is an error naming file:line. Sorted by category, file order within.
inline std::vector<Fortune> read_fortunes(const std::string& dir) {
    namespace fs = std::filesystem;
    MOEKD_CHECK(fs::is_directory(dir), "read_fortunes: '", dir,
                "' is not a directory (expected usr/share/games/fortunes;", " run scripts/build_tcd_corpus.sh)");
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) {
        const std::string n = e.path().filename().string();
        if (e.is_regular_file() && !e.is_symlink() && n.find('.') == std::string::npos) names.push_back(n);
    }
    std::sort(names.begin(), names.end());
    std::vector<Fortune> out;
    for (const auto& n : names) {
        const std::string path = dir + "/" + n;
        const std::string text = io::read_file(path, "read_fortunes");
        std::string line, cur;
        size_t pos = 0;
        int64_t lineno = 0;
        auto flush = [&]() {
            std::string t = clean_fortune(cur);
            if (!t.empty()) out.push_back({n, std::move(t)});
            cur.clear();
        };
        while (next_line(text, pos, line)) {
            ++lineno;
            if (!line.empty() && line.back() == '\r') line.pop_back();
            const auto u = check_utf8(line);
            MOEKD_CHECK(u.ok, "read_fortunes: ", path, ":", lineno, ": invalid UTF-8 (", u.reason, ")");
            if (line == "%" || line == "%%")
                flush();
            else
                cur += line + "\n";
        }
        flush();
    }
    MOEKD_CHECK(!out.empty(), "read_fortunes: no fortunes in '", dir, "'");
    return out;
}

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

// ---- built-in downstream tasks ------------------------------------------------------------

struct BuiltTask {
    GlueTaskInfo info;
    std::vector<GlueExample> train, dev;
};

/// Every text_a / text_b of the examples (for PretrainOptions::exclude).
inline std::vector<std::string> example_texts(const std::vector<GlueExample>& ex) {
    std::vector<std::string> out;
    for (const auto& e : ex) {
        out.push_back(e.text_a);
        if (!e.text_b.empty()) out.push_back(e.text_b);
    }
    return out;
}

namespace detail {
// Fortune categories that are catch-alls rather than topics (not used as FORTUNE classes).
inline bool fortune_catch_all(const std::string& c) {
    static const std::set<std::string> s{"cookie",       "fortunes",    "miscellaneous", "ascii-art",
                                         "translate-me", "linuxcookie", "knghtbrd",      "disclaimer"};
    return s.count(c) > 0;
}
inline char pos_group(char p) { return p == 's' ? 'a' : p; }
// True if the lowercased lemma starts a word of the lowercased text (inflections allowed).
inline bool mentions(const std::string& text_lc, const std::string& lemma_lc) {
    for (size_t at = text_lc.find(lemma_lc); at != std::string::npos; at = text_lc.find(lemma_lc, at + 1))
        if (at == 0 || !ascii_alnum(static_cast<unsigned char>(text_lc[at - 1]))) return true;
    return false;
}
inline void finish_task(BuiltTask& t, uint64_t seed, int64_t max_train, int64_t max_dev) {
    Generator g(seed ^ 0x7A5C0DEull);
    shuffle(t.train, g);
    shuffle(t.dev, g);
    if (max_train >= 0 && static_cast<int64_t>(t.train.size()) > max_train)
        t.train.resize(static_cast<size_t>(max_train));
    if (max_dev >= 0 && static_cast<int64_t>(t.dev.size()) > max_dev) t.dev.resize(static_cast<size_t>(max_dev));
    MOEKD_CHECK(!t.train.empty() && !t.dev.empty(), "build_task ", t.info.name, ": no ",
                t.train.empty() ? "train" : "dev", " examples (too little input data?)");
}
}  // namespace detail

/// FORTUNE: fortune text -> its category, over the `num_classes` largest topical categories
/// (catch-alls such as "cookie" or "miscellaneous" left out), texts of 20..400 characters,
/// each class capped at twice the smallest one. Split by a hash of the text.
inline BuiltTask build_fortune_task(const std::vector<Fortune>& fortunes, uint64_t seed, size_t num_classes = 10) {
    BuiltTask t{glue_task_info("FORTUNE"), {}, {}};
    std::map<std::string, std::vector<std::string>> by_cat;
    std::unordered_set<std::string> seen;
    for (const auto& f : fortunes) {
        if (detail::fortune_catch_all(f.category)) continue;
        std::string s = collapse_whitespace(f.text);
        if (s.size() < 20 || s.size() > 400 || !seen.insert(s).second) continue;
        by_cat[f.category].push_back(std::move(s));
    }
    std::vector<std::pair<size_t, std::string>> sizes;
    for (const auto& [c, v] : by_cat) sizes.push_back({v.size(), c});
    std::sort(sizes.begin(), sizes.end(),
              [](auto& a, auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
    if (sizes.size() > num_classes) sizes.resize(num_classes);
    MOEKD_CHECK(sizes.size() >= 2, "build_task FORTUNE: need at least 2 fortune categories, found ", sizes.size());
    for (const auto& sc : sizes) t.info.labels.push_back(sc.second);
    std::sort(t.info.labels.begin(), t.info.labels.end());
    const size_t cap = 2 * sizes.back().first;
    Generator g(seed);
    for (size_t k = 0; k < t.info.labels.size(); ++k) {
        auto v = by_cat[t.info.labels[k]];
        detail::shuffle(v, g);
        if (v.size() > cap) v.resize(cap);
        for (auto& s : v) (detail::in_dev(s, seed) ? t.dev : t.train).push_back({s, "", static_cast<int64_t>(k), 0});
    }
    return t;
}

/// WNPOS: a synset's definition -> its part of speech (noun, verb, adj incl. satellites, adv),
/// definitions of 10..300 characters; a definition shared by two parts of speech is dropped;
/// every class capped at the size of the smallest (adv), so classes are balanced.
inline BuiltTask build_wnpos_task(const std::vector<Synset>& wn, uint64_t seed) {
    BuiltTask t{glue_task_info("WNPOS"), {}, {}};
    std::unordered_map<std::string, int64_t> label_of;  // gloss -> class, -2 if ambiguous
    std::vector<std::string> order;
    for (const auto& s : wn) {
        if (s.gloss.size() < 10 || s.gloss.size() > 300) continue;
        const int64_t c = s.pos == 'n' ? 0 : s.pos == 'v' ? 1 : s.pos == 'r' ? 3 : 2;
        auto [it, fresh] = label_of.emplace(s.gloss, c);
        if (fresh)
            order.push_back(s.gloss);
        else if (it->second != c)
            it->second = -2;
    }
    std::vector<std::vector<std::string>> by(4);
    for (const auto& gl : order)
        if (label_of[gl] >= 0) by[static_cast<size_t>(label_of[gl])].push_back(gl);
    size_t cap = SIZE_MAX;
    for (const auto& v : by) cap = std::min(cap, v.size());
    MOEKD_CHECK(cap > 0, "build_task WNPOS: some part of speech has no synsets (need all four data files)");
    Generator g(seed);
    for (size_t k = 0; k < 4; ++k) {
        detail::shuffle(by[k], g);
        by[k].resize(cap);
        for (auto& s : by[k])
            (detail::in_dev(s, seed) ? t.dev : t.train).push_back({s, "", static_cast<int64_t>(k), 0});
    }
    return t;
}

/// WNGLOSS (like WiC): (usage example, definition) -> 1 if the example illustrates that
/// definition. For each usage example of a synset S that mentions a lemma w of S having another
/// sense S' of the same part of speech: one positive (example, gloss(S)) and one hard negative
/// (example, gloss(S')) with S' drawn at random among w's other senses (gloss different, the
/// example not one of S'). Split by the word w; dev pairs whose example also occurs in train
/// are dropped, so no example is in both splits.
inline BuiltTask build_wngloss_task(const std::vector<Synset>& wn, uint64_t seed) {
    BuiltTask t{glue_task_info("WNGLOSS"), {}, {}};
    std::unordered_map<std::string, std::vector<size_t>> senses;  // "w|pos" -> synsets
    for (size_t i = 0; i < wn.size(); ++i)
        for (const auto& w : wn[i].words)
            senses[detail::lower_ascii(w) + "|" + detail::pos_group(wn[i].pos)].push_back(i);
    Generator g(seed);
    std::set<std::pair<std::string, std::string>> seen;
    std::vector<GlueExample> dev;
    std::unordered_set<std::string> train_examples;
    for (size_t i = 0; i < wn.size(); ++i) {
        const Synset& s = wn[i];
        if (s.gloss.empty()) continue;
        for (const auto& ex : s.examples) {
            const std::string ex_lc = detail::lower_ascii(ex);
            const std::vector<size_t>* best = nullptr;
            std::string word;
            for (const auto& w : s.words) {
                const std::string w_lc = detail::lower_ascii(w);
                const auto it = senses.find(w_lc + "|" + detail::pos_group(s.pos));
                const auto& v = it->second;  // present: every lemma was indexed above
                if (w_lc.size() >= 2 && v.size() >= 2 && (!best || v.size() > best->size()) &&
                    detail::mentions(ex_lc, w_lc)) {
                    best = &v;
                    word = w_lc;
                }
            }
            if (!best) continue;
            std::vector<size_t> others;
            for (size_t j : *best) {
                const Synset& o = wn[j];
                if (j != i && !o.gloss.empty() && o.gloss != s.gloss &&
                    std::find(o.examples.begin(), o.examples.end(), ex) == o.examples.end())
                    others.push_back(j);
            }
            if (others.empty() || !seen.insert({ex, s.gloss}).second) continue;
            const std::string& neg =
                wn[others[static_cast<size_t>(g.randint(0, static_cast<int64_t>(others.size())))]].gloss;
            const bool to_dev = detail::in_dev(word, seed);
            auto& dst = to_dev ? dev : t.train;
            dst.push_back({ex, s.gloss, 1, 0});
            dst.push_back({ex, neg, 0, 0});
            if (!to_dev) train_examples.insert(ex);
        }
    }
    for (auto& e : dev)
        if (!train_examples.count(e.text_a)) t.dev.push_back(std::move(e));
    return t;
}

/// Builds a built-in task by name (FORTUNE, WNGLOSS, WNPOS): deterministic given the seed,
/// train/dev disjoint in their underlying items, shuffled, then cut to max_train / max_dev
/// examples (-1: all).
inline BuiltTask build_task(const std::string& name, const std::vector<Synset>& wn,
                            const std::vector<Fortune>& fortunes, uint64_t seed, int64_t max_train = -1,
                            int64_t max_dev = -1) {
    const GlueTaskInfo info = glue_task_info(name);
    BuiltTask t;
    if (info.name == "FORTUNE") {
        MOEKD_CHECK(!fortunes.empty(), "build_task FORTUNE: no fortunes given");
        t = build_fortune_task(fortunes, seed);
    } else if (info.name == "WNPOS" || info.name == "WNGLOSS") {
        MOEKD_CHECK(!wn.empty(), "build_task ", info.name, ": no WordNet synsets given");
        t = info.name == "WNPOS" ? build_wnpos_task(wn, seed) : build_wngloss_task(wn, seed);
    } else {
        throw Error(msg("build_task: '", name, "' is a GLUE task read from files (read_glue_split), not a built-in; ",
                        "built-ins: FORTUNE, WNGLOSS, WNPOS"));
    }
    detail::finish_task(t, seed, max_train, max_dev);
    return t;
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

// english_read.hpp — readers of the two Debian text sources of the TCD example:
//  * WordNet 3.0 (package wordnet-base): data.{noun,verb,adj,adv}, one synset per line:
//      offset lex_filenum ss_type w_cnt(hex) word lex_id ... p_cnt pointers... [frames] | gloss
//    (wndb(5WN)); the gloss holds the definition(s) and quoted usage examples, "; "-separated.
//    Lines starting with two spaces are the license header.
//  * fortunes (package fortunes): category files of "%"-separated entries.
// Files are read through io::read_file: a missing file or a directory where a file is expected
// is an error naming the path; invalid UTF-8 is an error naming file:line.
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

}  // namespace tcdb::english

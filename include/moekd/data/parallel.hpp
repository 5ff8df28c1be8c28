// parallel.hpp — reader for WMT-style parallel corpora (`--data DIR` of the translation example).
//
// Layout: DIR/<a>-<b>/{train,valid,test}.{a,b}, one sentence per line, line i of the .a file
// translating line i of the .b file (what scripts/build_gettext_corpus.sh writes, and how WMT
// data is usually unpacked). Either direction can be read from one directory: asking for
// (src=en, tgt=fr) finds DIR/fr-en as well as DIR/en-fr.
// Nothing is trusted: a missing file is named; files with different line counts name both files,
// both counts and the first line without a partner; invalid UTF-8 names the file, the line and
// the byte offset. Empty lines are allowed but a pair with an empty side is skipped and counted
// (as fairseq/torchtext pipelines do); a split left with no pairs is an error.
// A UTF-8 byte-order mark at the start of a file and a '\r' before each '\n' are removed.
// Files are read with io::read_file: a directory or an unreadable path is named, and pipes,
// process substitution (/dev/fd/N) and "-" (stdin) work. Each ParallelText carries an FNV-1a hash
// of the bytes of its two files (`hash`), so a program can record which corpus it trained on
// and refuse to resume on another one; parse_parallel does the same on bytes already in memory.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../io/read_file.hpp"
#include "text.hpp"

namespace moekd::data {

/// Aligned sentences of one split: src[i] translates to tgt[i].
struct ParallelText {
    std::vector<std::string> src, tgt;
    int64_t skipped_empty = 0;  // pairs dropped because one side (or both) was empty
    uint64_t hash = 0;          // FNV-1a of the bytes of the source file, then the target file
    size_t size() const { return src.size(); }
};

/// One language pair, one direction.
struct ParallelCorpus {
    std::string src_lang, tgt_lang;
    std::string dir;  // the <a>-<b> directory it was read from
    ParallelText train, valid, test;
};

/// Splits the bytes of a text file (`name` for errors) into lines, checking UTF-8; the name,
/// line (1-based) and byte offset of the first invalid sequence are in the error.
inline std::vector<std::string> split_lines_utf8(std::string_view bytes, const std::string& name,
                                                 std::string_view what = "parallel") {
    size_t start = bytes.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
    std::vector<std::string> lines;
    while (start < bytes.size()) {
        size_t end = bytes.find('\n', start);
        if (end == std::string::npos) end = bytes.size();
        std::string_view line(bytes.data() + start, end - start);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        const Utf8Check c = check_utf8(line);
        MOEKD_CHECK(c.ok, what, ": '", name, "' line ", lines.size() + 1, ": invalid UTF-8 (", c.reason,
                    ") at byte offset ", start + c.offset, " of the file (byte ", c.offset + 1, " of the line)");
        lines.emplace_back(line);
        start = end + 1;
    }
    return lines;
}

/// Reads a text file as lines, checking UTF-8 (split_lines_utf8). "-" is stdin; a missing file
/// or a directory is an error naming the path.
inline std::vector<std::string> read_lines_utf8(const std::string& path, std::string_view what = "parallel") {
    return split_lines_utf8(io::read_file(path, what), path, what);
}

/// Two aligned files already in memory (names for errors). Pairs where either side is empty
/// (after trimming whitespace) are skipped and counted; when require_nonempty, no pair left is
/// an error.
inline ParallelText parse_parallel(std::string_view src_bytes, const std::string& src_path, std::string_view tgt_bytes,
                                   const std::string& tgt_path, bool require_nonempty = true) {
    std::vector<std::string> s = split_lines_utf8(src_bytes, src_path);
    std::vector<std::string> t = split_lines_utf8(tgt_bytes, tgt_path);
    if (s.size() != t.size()) {
        const bool src_longer = s.size() > t.size();
        MOEKD_CHECK(false, "parallel: misaligned corpus: '", src_path, "' has ", s.size(), " lines but '", tgt_path,
                    "' has ", t.size(), "; line ", std::min(s.size(), t.size()) + 1, " of '",
                    src_longer ? src_path : tgt_path, "' is the first without a partner");
    }
    ParallelText out;
    out.hash = fnv1a64(tgt_bytes, fnv1a64(std::string_view("\0", 1), fnv1a64(src_bytes)));
    out.src.reserve(s.size());
    out.tgt.reserve(t.size());
    for (size_t i = 0; i < s.size(); ++i) {
        std::string a = collapse_whitespace(s[i]), b = collapse_whitespace(t[i]);
        if (a.empty() || b.empty()) { ++out.skipped_empty; continue; }
        out.src.push_back(std::move(a));
        out.tgt.push_back(std::move(b));
    }
    MOEKD_CHECK(!require_nonempty || out.size() > 0, "parallel: empty corpus: '", src_path, "' and '", tgt_path,
                "' hold no sentence pair (", s.size(), " lines, ", out.skipped_empty, " with an empty side)");
    return out;
}

/// Reads two aligned files (parse_parallel).
inline ParallelText read_parallel(const std::string& src_path, const std::string& tgt_path,
                                  bool require_nonempty = true) {
    const std::string s = io::read_file(src_path, "parallel"), t = io::read_file(tgt_path, "parallel");
    return parse_parallel(s, src_path, t, tgt_path, require_nonempty);
}

/// True for a language code as used in directory and file names: 2-3 lower-case ASCII letters,
/// optionally '_' and a region ("pt_BR"). '-' is not allowed: it separates the two codes of a
/// pair directory.
inline bool valid_language_code(std::string_view c) {
    size_t i = 0;
    while (i < c.size() && c[i] >= 'a' && c[i] <= 'z') ++i;
    if (i < 2 || i > 3) return false;
    if (i == c.size()) return true;
    if (c[i] != '_' || i + 1 == c.size()) return false;
    for (size_t k = i + 1; k < c.size(); ++k)
        if (!detail::ascii_alnum(static_cast<unsigned char>(c[k]))) return false;
    return true;
}

/// The language pairs present in a corpus directory: every subdirectory named <a>-<b> with
/// valid codes, as {a, b}, sorted.
inline std::vector<std::pair<std::string, std::string>> list_language_pairs(const std::string& dir) {
    namespace fs = std::filesystem;
    MOEKD_CHECK(fs::is_directory(dir), "parallel: corpus directory '", dir, "' does not exist");
    std::vector<std::pair<std::string, std::string>> pairs;
    for (const auto& e : fs::directory_iterator(dir)) {
        if (!e.is_directory()) continue;
        const std::string name = e.path().filename().string();
        const size_t dash = name.find('-');
        if (dash == std::string::npos) continue;
        std::string a = name.substr(0, dash), b = name.substr(dash + 1);
        if (valid_language_code(a) && valid_language_code(b)) pairs.emplace_back(std::move(a), std::move(b));
    }
    std::sort(pairs.begin(), pairs.end());
    return pairs;
}

/// Reads DIR/<src>-<tgt> (or DIR/<tgt>-<src>) with files {train,valid,test}.{src,tgt}, in the
/// direction src -> tgt. Without valid/test files (need_eval = false) those splits stay empty.
inline ParallelCorpus read_parallel_corpus(const std::string& dir, const std::string& src, const std::string& tgt,
                                           bool need_eval = true) {
    namespace fs = std::filesystem;
    MOEKD_CHECK(valid_language_code(src), "parallel: '", src, "' is not a language code (like 'fr' or 'pt_BR')");
    MOEKD_CHECK(valid_language_code(tgt), "parallel: '", tgt, "' is not a language code (like 'fr' or 'pt_BR')");
    MOEKD_CHECK(src != tgt, "parallel: source and target language are both '", src, "'");
    MOEKD_CHECK(fs::is_directory(dir), "parallel: corpus directory '", dir, "' does not exist");
    fs::path pd = fs::path(dir) / (src + "-" + tgt);
    if (!fs::is_directory(pd)) pd = fs::path(dir) / (tgt + "-" + src);
    if (!fs::is_directory(pd)) {
        std::string have;
        for (const auto& p : list_language_pairs(dir)) have += (have.empty() ? "" : ", ") + p.first + "-" + p.second;
        MOEKD_CHECK(false, "parallel: no directory '", src, "-", tgt, "' or '", tgt, "-", src, "' in '", dir,
                    "' (pairs found: ", have.empty() ? "none" : have, ")");
    }
    ParallelCorpus c;
    c.src_lang = src;
    c.tgt_lang = tgt;
    c.dir = pd.string();
    auto file = [&](const char* split, const std::string& lang) { return (pd / (std::string(split) + "." + lang)).string(); };
    c.train = read_parallel(file("train", src), file("train", tgt));
    if (need_eval || fs::exists(file("valid", src)) || fs::exists(file("valid", tgt)))
        c.valid = read_parallel(file("valid", src), file("valid", tgt));
    if (need_eval || fs::exists(file("test", src)) || fs::exists(file("test", tgt)))
        c.test = read_parallel(file("test", src), file("test", tgt));
    return c;
}

}  // namespace moekd::data

// text.hpp — UTF-8 validation and the cleaning rules for parallel sentence pairs.
//
// For reading parallel corpora: every corpus line is checked for valid UTF-8
// (a bad file is an error naming the byte offset), and the gettext corpus builder cleans each
// (English, translation) pair with the rules here: collapse whitespace, strip UI accelerator
// markers, drop identical / placeholder-only / control-character pairs. The deterministic
// train/valid/test split (a hash of the normalised English side) lives here too, so a sentence
// can never sit in two splits. Pure string code: no tensors. next_line walks the lines of a whole
// file read by io::read_file (the readers of real data read files that way, so that a missing
// file, a directory or a pipe is handled in one place).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/hash.hpp"

namespace moekd::data {

/// The next line of `text` from `pos` (without its '\n'), as std::getline would give it: false at
/// the end; a last line without a newline is returned too.
inline bool next_line(std::string_view text, size_t& pos, std::string& line) {
    if (pos >= text.size()) return false;
    const size_t nl = text.find('\n', pos);
    const size_t end = nl == std::string_view::npos ? text.size() : nl;
    line.assign(text.data() + pos, end - pos);
    pos = nl == std::string_view::npos ? text.size() : nl + 1;
    return true;
}

// ---- UTF-8 ---------------------------------------------------------------------------------

/// Result of a UTF-8 check: ok, or the byte offset of the first bad sequence and why.
struct Utf8Check {
    bool ok = true;
    size_t offset = 0;       // byte offset of the lead byte of the first invalid sequence
    const char* reason = "";  // "overlong encoding", "surrogate code point", ...
};

/// Strict UTF-8 (RFC 3629): rejects overlong forms, surrogates (U+D800..DFFF), code points
/// above U+10FFFF, stray continuation bytes, bytes 0xC0/0xC1/0xF5..0xFF and truncated sequences.
inline Utf8Check check_utf8(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const size_t n = s.size();
    size_t i = 0;
    auto bad = [&](const char* why) { return Utf8Check{false, i, why}; };
    while (i < n) {
        const unsigned c = p[i];
        if (c < 0x80) { ++i; continue; }
        if (c < 0xC0) return bad("unexpected continuation byte");
        if (c < 0xC2) return bad("overlong encoding");
        if (c > 0xF4) return bad("invalid lead byte (above U+10FFFF)");
        const size_t len = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
        if (i + len > n) return bad("truncated sequence");
        for (size_t k = 1; k < len; ++k)
            if ((p[i + k] & 0xC0) != 0x80) return bad("truncated sequence");
        const unsigned c1 = p[i + 1];
        if (c == 0xE0 && c1 < 0xA0) return bad("overlong encoding");
        if (c == 0xED && c1 > 0x9F) return bad("surrogate code point");
        if (c == 0xF0 && c1 < 0x90) return bad("overlong encoding");
        if (c == 0xF4 && c1 > 0x8F) return bad("code point above U+10FFFF");
        i += len;
    }
    return {};
}

inline bool is_valid_utf8(std::string_view s) { return check_utf8(s).ok; }

/// Decodes the code point at s[i] of a string already known to be valid UTF-8; advances i.
inline uint32_t next_code_point(std::string_view s, size_t& i) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (size_t k = 1; k < len && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    i += len;
    return cp;
}

// ---- small helpers -------------------------------------------------------------------------

namespace detail {
inline bool ascii_alnum(unsigned char c) { return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'); }
inline bool ascii_alpha(unsigned char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
inline bool ascii_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
// A byte of a word: ASCII letter/digit or any byte of a non-ASCII character.
inline bool word_byte(unsigned char c) { return ascii_alnum(c) || c >= 0x80; }
// Non-ASCII code points that are punctuation/symbols rather than letters (rough, by block).
inline bool symbol_code_point(uint32_t cp) {
    return (cp >= 0x80 && cp <= 0xBF) || cp == 0xD7 || cp == 0xF7 || (cp >= 0x2000 && cp <= 0x2BFF) ||
           (cp >= 0x3000 && cp <= 0x303F) || (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF0F) ||
           (cp >= 0xFFF0);
}
}  // namespace detail

/// Replaces every run of ASCII whitespace (space, tab, newline, CR, VT, FF) by one space and
/// trims both ends: a multi-line catalog string becomes one corpus line. Non-breaking and other
/// Unicode spaces are kept (French typography uses them before ':' and '?').
inline std::string collapse_whitespace(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    bool pending = false;
    for (char ch : s) {
        if (detail::ascii_space(static_cast<unsigned char>(ch))) { pending = !out.empty(); continue; }
        if (pending) out.push_back(' ');
        pending = false;
        out.push_back(ch);
    }
    return out;
}

/// True if s holds a C0 control character other than ASCII whitespace, or DEL (terminal escape
/// sequences, bell characters): such strings are UI plumbing, not sentences.
inline bool has_control_chars(std::string_view s) {
    for (char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if ((c < 0x20 && !detail::ascii_space(c)) || c == 0x7F) return true;
    }
    return false;
}

// ---- UI accelerator markers ----------------------------------------------------------------

/// Removes CJK/Indic-style accelerators: "(_F)" or "(&F)" (one ASCII letter or digit), with one
/// space before it if present: "ファイル(_F)..." -> "ファイル...". The pattern is unambiguous.
inline std::string strip_paren_accelerators(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '(' && i + 3 < s.size() && (s[i + 1] == '_' || s[i + 1] == '&') &&
            detail::ascii_alnum(static_cast<unsigned char>(s[i + 2])) && s[i + 3] == ')') {
            if (!out.empty() && out.back() == ' ') out.pop_back();
            i += 3;
            continue;
        }
        out.push_back(s[i]);
    }
    return out;
}

/// Positions of possible accelerator markers `m` ('_' or '&') in s: the marker is followed by a
/// word character and is neither doubled ("__", "&&" are literal) nor, for '&', part of an HTML
/// entity ("&amp;", "&#38;") or of a word ("AT&T").
inline std::vector<size_t> accelerator_candidates(std::string_view s, char m) {
    std::vector<size_t> pos;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
        if (s[i] != m) continue;
        const auto next = static_cast<unsigned char>(s[i + 1]);
        if (next == static_cast<unsigned char>(m)) { ++i; continue; }  // doubled: literal
        if (i > 0 && s[i - 1] == m) continue;
        if (!detail::word_byte(next)) continue;
        if (m == '&') {
            if (i > 0 && detail::ascii_alnum(static_cast<unsigned char>(s[i - 1]))) continue;  // AT&T
            size_t j = i + 1;
            if (j < s.size() && s[j] == '#') ++j;
            while (j < s.size() && detail::ascii_alnum(static_cast<unsigned char>(s[j]))) ++j;
            if (j < s.size() && s[j] == ';') continue;  // entity
        }
        pos.push_back(i);
    }
    return pos;
}

namespace detail {
// The word (word bytes and the marker) around position i.
inline std::string_view token_at(std::string_view s, size_t i, char m) {
    size_t a = i, b = i + 1;
    auto in = [&](char c) { return c == m || word_byte(static_cast<unsigned char>(c)); };
    while (a > 0 && in(s[a - 1])) --a;
    while (b < s.size() && in(s[b])) ++b;
    return s.substr(a, b - a);
}
// "LC_ALL", "O_RDONLY", "SIG_IGN": upper-case letters/digits on both sides of an underscore.
inline bool constant_like(std::string_view tok) {
    bool lower = false, before = false;
    for (size_t k = 0; k < tok.size(); ++k) {
        const auto c = static_cast<unsigned char>(tok[k]);
        if (c >= 0x80 || (c >= 'a' && c <= 'z')) lower = true;
        if (tok[k] == '_' && k > 0) before = true;
    }
    return before && !lower;
}
}  // namespace detail

/// Strips UI accelerator markers from an (English, translation) pair, in place: "_File" ->
/// "File", "Save _As" -> "Save As", "&Open" -> "Open", "ファイル(_F)" -> "ファイル".
/// A marker is stripped from the English only when it is the only candidate there and its word
/// is not an identifier (the same word appears verbatim in the translation, e.g. "file_name",
/// or it looks like a constant, "LC_ALL"); the translation's marker is then stripped if it has
/// exactly one. "__" and "&&" are left as they are (literal, e.g. "a && b").
inline void strip_accelerators(std::string& en, std::string& tr) {
    en = strip_paren_accelerators(en);
    tr = strip_paren_accelerators(tr);
    for (char m : {'_', '&'}) {
        const auto pe = accelerator_candidates(en, m);
        if (pe.size() != 1) continue;
        const std::string_view tok = detail::token_at(en, pe[0], m);
        if (tr.find(tok) != std::string::npos || (m == '_' && detail::constant_like(tok))) continue;
        en.erase(pe[0], 1);
        const auto pt = accelerator_candidates(tr, m);
        if (pt.size() == 1 && !(m == '_' && detail::constant_like(detail::token_at(tr, pt[0], m))))
            tr.erase(pt[0], 1);
    }
}

// ---- placeholders --------------------------------------------------------------------------

/// s with printf conversions ("%s", "%1$d", "%-10.3lf", "%<PRIu64>", "%%"), Python "%(name)s",
/// and brace placeholders ("{0}", "{name}", "${var}") removed.
inline std::string remove_placeholders(std::string_view s) {
    std::string out;
    const size_t n = s.size();
    auto digits = [&](size_t j) { while (j < n && s[j] >= '0' && s[j] <= '9') ++j; return j; };
    for (size_t i = 0; i < n; ++i) {
        if (s[i] == '%' && i + 1 < n) {
            size_t j = i + 1;
            if (s[j] == '%') { i = j; continue; }
            if (s[j] == '(') {  // %(name)s
                const size_t close = s.find(')', j);
                if (close != std::string_view::npos && close - j < 40) j = close + 1;
            }
            { const size_t d = digits(j); if (d > j && d < n && s[d] == '$') j = d + 1; }  // %1$s
            while (j < n && std::string_view("-+ #0'I").find(s[j]) != std::string_view::npos) ++j;
            if (j < n && s[j] == '*') ++j; else j = digits(j);
            if (j < n && s[j] == '.') { ++j; if (j < n && s[j] == '*') ++j; else j = digits(j); }
            while (j < n && std::string_view("hlLqjzZt").find(s[j]) != std::string_view::npos) ++j;
            if (j < n && s[j] == '<') {  // %<PRIu64>
                const size_t close = s.find('>', j);
                if (close != std::string_view::npos && close - j < 16) { i = close; continue; }
            }
            if (j < n && std::string_view("diouxXeEfFgGaAcspnmCS").find(s[j]) != std::string_view::npos) {
                i = j;
                continue;
            }
        }
        if (s[i] == '{' || (s[i] == '$' && i + 1 < n && s[i + 1] == '{')) {
            const size_t open = s[i] == '$' ? i + 1 : i;
            const size_t close = s.find('}', open);
            if (close != std::string_view::npos && close - open <= 32 &&
                s.substr(open, close - open).find(' ') == std::string_view::npos) {
                i = close;
                continue;
            }
        }
        out.push_back(s[i]);
    }
    return out;
}

/// True when s holds at least one letter (ASCII or a non-ASCII, non-symbol code point) once the
/// placeholders are removed. "%s", "%d: %s", "{0} - {1}", "..." have none.
inline bool has_letters(std::string_view s) {
    const std::string r = remove_placeholders(s);
    for (size_t i = 0; i < r.size();) {
        const auto c = static_cast<unsigned char>(r[i]);
        if (c < 0x80) {
            if (detail::ascii_alpha(c)) return true;
            ++i;
            continue;
        }
        if (!detail::symbol_code_point(next_code_point(r, i))) return true;
    }
    return false;
}

// ---- cleaning one pair ---------------------------------------------------------------------

/// Why a pair was dropped (none = kept). The order is the order the rules are applied in.
enum class Drop { none, untranslated, invalid_utf8, control, empty, identical, placeholder, too_long, duplicate };
inline constexpr int kDropReasons = 9;

inline const char* drop_name(Drop d) {
    static const char* names[] = {"kept",  "untranslated", "invalid_utf8", "control",  "empty",
                                  "identical", "placeholder", "too_long", "duplicate"};
    return names[static_cast<int>(d)];
}

/// Cleans one (English, translation) pair in place and says whether to keep it. Rules, in order:
/// empty translation -> untranslated; invalid UTF-8 on either side; control characters; strip
/// accelerators; collapse whitespace to one line; empty after that; English == translation;
/// no letters outside placeholders on either side; longer than max_bytes (0 = no limit).
/// (Duplicates are the caller's business: see GettextCorpus.)
inline Drop clean_pair(std::string& en, std::string& tr, size_t max_bytes = 0) {
    if (tr.empty()) return Drop::untranslated;
    if (!is_valid_utf8(en) || !is_valid_utf8(tr)) return Drop::invalid_utf8;
    if (has_control_chars(en) || has_control_chars(tr)) return Drop::control;
    strip_accelerators(en, tr);
    en = collapse_whitespace(en);
    tr = collapse_whitespace(tr);
    if (en.empty() || tr.empty()) return Drop::empty;
    if (en == tr) return Drop::identical;
    if (!has_letters(en) || !has_letters(tr)) return Drop::placeholder;
    if (max_bytes > 0 && (en.size() > max_bytes || tr.size() > max_bytes)) return Drop::too_long;
    return Drop::none;
}

// ---- deterministic split -------------------------------------------------------------------

using moekd::fnv1a64;  // FNV-1a, 64 bit (core/hash.hpp)

/// The key a sentence is split by: ASCII letters lower-cased, ASCII punctuation, spaces and
/// non-ASCII punctuation/symbols ("…", "—", "«") dropped, other non-ASCII kept. "Open…",
/// "_Open:" and "open" share a key, hence a split.
inline std::string split_key(std::string_view en) {
    std::string k;
    for (size_t i = 0; i < en.size();) {
        const auto c = static_cast<unsigned char>(en[i]);
        if (c < 0x80) {
            if (detail::ascii_alnum(c)) k.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c));
            ++i;
            continue;
        }
        const size_t start = i;
        const uint32_t cp = next_code_point(en, i);
        if (!detail::symbol_code_point(cp)) k.append(en.substr(start, std::min(i, en.size()) - start));
    }
    return k;
}

enum class Split { train = 0, valid = 1, test = 2 };
inline const char* split_name(Split s) { return s == Split::train ? "train" : s == Split::valid ? "valid" : "test"; }

/// Split of an English sentence: FNV-1a 64 of split_key(en), finalised (splitmix64) and mapped
/// to [0, 1); below valid_frac -> valid, below valid_frac + test_frac -> test, else train.
/// Depends only on the sentence, so every language and every run puts it in the same split.
inline Split split_of(std::string_view en, double valid_frac = 0.01, double test_frac = 0.01) {
    MOEKD_CHECK(valid_frac >= 0 && test_frac >= 0 && valid_frac + test_frac < 1, "split_of: fractions valid ",
                valid_frac, " and test ", test_frac, " must be >= 0 and sum to less than 1");
    uint64_t h = fnv1a64(split_key(en));
    h ^= h >> 30; h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27; h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    const double u = static_cast<double>(h >> 11) * 0x1.0p-53;
    if (u < valid_frac) return Split::valid;
    if (u < valid_frac + test_frac) return Split::test;
    return Split::train;
}

}  // namespace moekd::data

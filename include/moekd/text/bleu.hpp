// bleu.hpp — corpus and sentence BLEU computed exactly as sacreBLEU (v2.x) does by default, so
// translation scores printed by moekd can be compared with published sacreBLEU numbers.
//
// Default signature: nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp
//   * tok:13a     — mteval-v13a tokenisation (tokenize_13a below, a transcription of
//                   sacrebleu/tokenizers/tokenizer_13a.py + tokenizer_re.py);
//   * case:mixed  — case-sensitive;
//   * smooth:exp  — NIST "exponential" smoothing: the k-th n-gram order with no match gets
//                   precision 100 / (2^k * total);
//   * eff:no      — always 4 orders (sentence_bleu defaults to eff:yes, as sacrebleu.sentence_bleu).
// Brevity penalty exp(1 - ref_len / hyp_len) when hyp_len < ref_len; several references per
// segment use the closest reference length (ties: the shorter) and clipped n-gram counts against
// the per-n-gram maximum over references.
// Everything works on UTF-8 bytes; whitespace splitting follows Python's str.split() (the Unicode
// whitespace set, e.g. U+00A0, U+3000), so non-Latin scripts score as in sacreBLEU.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "../core/error.hpp"

namespace moekd::text {

namespace detail {

// Length in bytes of the code point at s[i] if it is one of Python's str.isspace() characters,
// else 0. Invalid UTF-8 is never whitespace.
inline size_t py_space_len(std::string_view s, size_t i) {
    const auto b = [&](size_t k) { return k < s.size() ? static_cast<unsigned char>(s[k]) : 0u; };
    const unsigned c = b(i);
    if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) return 1;
    if (c == 0xC2 && (b(i + 1) == 0x85 || b(i + 1) == 0xA0)) return 2;                  // U+0085, U+00A0
    if (c == 0xE1 && b(i + 1) == 0x9A && b(i + 2) == 0x80) return 3;                     // U+1680
    if (c == 0xE2 && b(i + 1) == 0x80) {
        const unsigned d = b(i + 2);
        if ((d >= 0x80 && d <= 0x8A) || d == 0xA8 || d == 0xA9 || d == 0xAF) return 3;    // U+2000-200A, 2028, 2029, 202F
    }
    if (c == 0xE2 && b(i + 1) == 0x81 && b(i + 2) == 0x9F) return 3;                     // U+205F
    if (c == 0xE3 && b(i + 1) == 0x80 && b(i + 2) == 0x80) return 3;                     // U+3000
    return 0;
}

inline void replace_all(std::string& s, std::string_view from, std::string_view to) {
    std::string out;
    size_t pos = 0;
    for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
        out.append(s, pos, hit - pos);
        out.append(to);
    }
    if (pos == 0) return;
    out.append(s, pos, std::string::npos);
    s = std::move(out);
}

inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The first regex of tokenizer_re.py: [\{-\~\[-\` -\&\(-\+\:-\@\/]
inline bool is_13a_punct(char ch) {
    const unsigned c = static_cast<unsigned char>(ch);
    return (c >= '{' && c <= '~') || (c >= '[' && c <= '`') || (c >= ' ' && c <= '&') || (c >= '(' && c <= '+') ||
           (c >= ':' && c <= '@') || c == '/';
}

}  // namespace detail

/// Python's str.split() (no argument) on UTF-8: runs of Unicode whitespace separate tokens.
inline std::vector<std::string> split_whitespace(std::string_view s) {
    std::vector<std::string> out;
    size_t i = 0, start = std::string::npos;
    while (i < s.size()) {
        const size_t w = detail::py_space_len(s, i);
        if (w) {
            if (start != std::string::npos) out.emplace_back(s.substr(start, i - start));
            start = std::string::npos;
            i += w;
        } else {
            if (start == std::string::npos) start = i;
            ++i;
        }
    }
    if (start != std::string::npos) out.emplace_back(s.substr(start));
    return out;
}

/// Python's str.rstrip() (no argument) on UTF-8.
inline std::string_view rstrip_whitespace(std::string_view s) {
    size_t end = 0, i = 0;  // end: one past the last non-space code point
    while (i < s.size()) {
        const size_t w = detail::py_space_len(s, i);
        if (w) { i += w; } else { ++i; end = i; }
    }
    return s.substr(0, end);
}

/// The 13a tokeniser (sacreBLEU's default), including sacreBLEU's rstrip of the segment.
/// tokenize_13a("Hello, world!") == "Hello , world !"
inline std::string tokenize_13a(std::string_view segment) {
    std::string line(rstrip_whitespace(segment));
    detail::replace_all(line, "<skipped>", "");
    detail::replace_all(line, "-\n", "");
    detail::replace_all(line, "\n", " ");
    if (line.find('&') != std::string::npos) {
        detail::replace_all(line, "&quot;", "\"");
        detail::replace_all(line, "&amp;", "&");
        detail::replace_all(line, "&lt;", "<");
        detail::replace_all(line, "&gt;", ">");
    }
    std::string s = " " + line + " ";
    std::string t;
    // 1. ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> " \1 "
    t.reserve(s.size() * 2);
    for (char c : s) {
        if (detail::is_13a_punct(c)) { t += ' '; t += c; t += ' '; } else { t += c; }
    }
    // 2. ([^0-9])([\.,]) -> "\1 \2 "   (left-to-right, non-overlapping, as re.sub)
    s.clear();
    for (size_t i = 0; i < t.size();) {
        if (i + 1 < t.size() && !detail::is_digit(t[i]) && (t[i + 1] == '.' || t[i + 1] == ',')) {
            s += t[i]; s += ' '; s += t[i + 1]; s += ' ';
            i += 2;
        } else {
            s += t[i++];
        }
    }
    // 3. ([\.,])([^0-9]) -> " \1 \2"
    t.clear();
    for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && (s[i] == '.' || s[i] == ',') && !detail::is_digit(s[i + 1])) {
            t += ' '; t += s[i]; t += ' '; t += s[i + 1];
            i += 2;
        } else {
            t += s[i++];
        }
    }
    // 4. ([0-9])(-) -> "\1 \2 "
    s.clear();
    for (size_t i = 0; i < t.size();) {
        if (i + 1 < t.size() && detail::is_digit(t[i]) && t[i + 1] == '-') {
            s += t[i]; s += ' '; s += '-'; s += ' ';
            i += 2;
        } else {
            s += t[i++];
        }
    }
    // single spaces, none at the ends (Python: ' '.join(line.split()))
    std::string out;
    for (const std::string& w : split_whitespace(s)) {
        if (!out.empty()) out += ' ';
        out += w;
    }
    return out;
}

constexpr int kBleuMaxOrder = 4;

/// Sufficient statistics of BLEU (summable over segments).
struct BleuStats {
    int64_t hyp_len = 0, ref_len = 0;
    std::array<int64_t, kBleuMaxOrder> correct{}, total{};
    BleuStats& operator+=(const BleuStats& o) {
        hyp_len += o.hyp_len;
        ref_len += o.ref_len;
        for (int n = 0; n < kBleuMaxOrder; ++n) { correct[n] += o.correct[n]; total[n] += o.total[n]; }
        return *this;
    }
};

/// A BLEU score with sacreBLEU's verbose fields.
struct BleuScore {
    double score = 0;                                // 0..100
    std::array<double, kBleuMaxOrder> precisions{};  // percent, after smoothing
    double bp = 0, ratio = 0;
    BleuStats stats;
    /// "BLEU = 32.1234 60.0/40.0/30.0/20.0 (BP = 1.000 ratio = 1.000 hyp_len = 10 ref_len = 10)"
    std::string verbose(int decimals = 4) const {
        char buf[256];
        std::snprintf(buf, sizeof buf, "BLEU = %.*f %.1f/%.1f/%.1f/%.1f (BP = %.3f ratio = %.3f hyp_len = %lld ref_len = %lld)",
                      decimals, score, precisions[0], precisions[1], precisions[2], precisions[3], bp, ratio,
                      static_cast<long long>(stats.hyp_len), static_cast<long long>(stats.ref_len));
        return buf;
    }
};

namespace detail {
using NgramCounts = std::unordered_map<std::string, int64_t>;
// n-grams (1..4) of whitespace-separated tokens; key = tokens joined by ' ' (tokens hold no ' ').
inline NgramCounts count_ngrams(const std::vector<std::string>& tok) {
    NgramCounts c;
    for (int n = 1; n <= kBleuMaxOrder; ++n)
        for (size_t i = 0; i + n <= tok.size(); ++i) {
            std::string key = tok[i];
            for (int k = 1; k < n; ++k) { key += ' '; key += tok[i + k]; }
            ++c[key];
        }
    return c;
}
inline int ngram_order(const std::string& key) {
    int n = 1;
    for (char c : key) n += c == ' ';
    return n;
}
}  // namespace detail

/// Statistics of one segment against its references (already 13a-tokenised or raw: tokenize
/// says whether to apply tokenize_13a first).
inline BleuStats segment_stats(std::string_view hyp, const std::vector<std::string_view>& refs, bool tokenize = true) {
    MOEKD_CHECK(!refs.empty(), "bleu: a segment needs at least one reference");
    const auto toks = [&](std::string_view s) { return split_whitespace(tokenize ? tokenize_13a(s) : std::string(s)); };
    detail::NgramCounts ref_max;
    std::vector<int64_t> ref_lens;
    for (size_t r = 0; r < refs.size(); ++r) {
        const std::vector<std::string> rt = toks(refs[r]);
        ref_lens.push_back(static_cast<int64_t>(rt.size()));
        for (auto& [k, v] : detail::count_ngrams(rt)) {
            int64_t& m = ref_max[k];
            m = std::max(m, v);
        }
    }
    const std::vector<std::string> ht = toks(hyp);
    BleuStats st;
    st.hyp_len = static_cast<int64_t>(ht.size());
    int64_t best_diff = -1, best_len = -1;  // closest reference length, ties -> shorter
    for (int64_t L : ref_lens) {
        const int64_t d = L > st.hyp_len ? L - st.hyp_len : st.hyp_len - L;
        if (best_diff == -1 || d < best_diff) { best_diff = d; best_len = L; }
        else if (d == best_diff && L < best_len) best_len = L;
    }
    st.ref_len = best_len;
    for (const auto& [k, v] : detail::count_ngrams(ht)) {
        const int n = detail::ngram_order(k) - 1;
        st.total[n] += v;
        if (auto it = ref_max.find(k); it != ref_max.end()) st.correct[n] += std::min(v, it->second);
    }
    return st;
}

/// BLEU from summed statistics: sacrebleu.BLEU.compute_bleu with smooth_method = "exp".
inline BleuScore bleu_from_stats(const BleuStats& st, bool effective_order = false) {
    BleuScore s;
    s.stats = st;
    s.bp = 1.0;
    if (st.hyp_len < st.ref_len) s.bp = st.hyp_len > 0 ? std::exp(1.0 - double(st.ref_len) / double(st.hyp_len)) : 0.0;
    s.ratio = st.ref_len ? double(st.hyp_len) / double(st.ref_len) : 0.0;
    bool any = false;
    for (int64_t c : st.correct) any = any || c != 0;
    if (!any) return s;  // score 0, precisions 0 (sacreBLEU's early stop)
    double smooth = 1.0;
    int eff = kBleuMaxOrder;
    for (int n = 0; n < kBleuMaxOrder; ++n) {
        if (st.total[n] == 0) break;
        if (effective_order) eff = n + 1;
        if (st.correct[n] == 0) {
            smooth *= 2;
            s.precisions[n] = 100.0 / (smooth * double(st.total[n]));
        } else {
            s.precisions[n] = 100.0 * double(st.correct[n]) / double(st.total[n]);
        }
    }
    double logsum = 0;
    for (int n = 0; n < eff; ++n) logsum += s.precisions[n] == 0.0 ? -9999999999.0 : std::log(s.precisions[n]);
    s.score = s.bp * std::exp(logsum / eff);
    return s;
}

/// Corpus BLEU, sacreBLEU default (one reference stream).
/// hyps[i] is scored against refs[i]; the two must have the same length.
inline BleuScore corpus_bleu(const std::vector<std::string>& hyps, const std::vector<std::string>& refs) {
    MOEKD_CHECK(hyps.size() == refs.size(), "bleu: ", hyps.size(), " hypotheses but ", refs.size(),
                " references (they must be aligned line by line)");
    BleuStats total;
    for (size_t i = 0; i < hyps.size(); ++i) total += segment_stats(hyps[i], {refs[i]});
    return bleu_from_stats(total);
}

/// Corpus BLEU against several reference streams: ref_streams[r][i] is reference r of segment i
/// (signature nrefs:R).
inline BleuScore corpus_bleu(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& ref_streams) {
    MOEKD_CHECK(!ref_streams.empty(), "bleu: no reference stream");
    for (size_t r = 0; r < ref_streams.size(); ++r)
        MOEKD_CHECK(ref_streams[r].size() == hyps.size(), "bleu: ", hyps.size(), " hypotheses but reference stream ", r,
                    " has ", ref_streams[r].size(), " lines");
    BleuStats total;
    std::vector<std::string_view> refs(ref_streams.size());
    for (size_t i = 0; i < hyps.size(); ++i) {
        for (size_t r = 0; r < ref_streams.size(); ++r) refs[r] = ref_streams[r][i];
        total += segment_stats(hyps[i], refs);
    }
    return bleu_from_stats(total);
}

/// Sentence BLEU as sacrebleu.sentence_bleu (exp smoothing, effective order on).
inline BleuScore sentence_bleu(std::string_view hyp, std::string_view ref) {
    return bleu_from_stats(segment_stats(hyp, {ref}), /*effective_order=*/true);
}

/// sacreBLEU's signature for the corpus_bleu above (the "version:" field is left out: this is
/// not sacreBLEU, only its algorithm).
inline std::string bleu_signature(int nrefs = 1, bool effective_order = false) {
    return "nrefs:" + std::to_string(nrefs) + "|case:mixed|eff:" + (effective_order ? "yes" : "no") + "|tok:13a|smooth:exp";
}

}  // namespace moekd::text

// english_tasks.hpp — the TCD example's three built-in downstream tasks with real labels, in
// GLUE's layout (data/glue.hpp): FORTUNE (fortune -> category), WNPOS (definition -> part of
// speech), WNGLOSS (usage example, definition -> same sense?, like WiC). Deterministic given the
// seed; train and dev disjoint in their underlying items.
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
#include "english_corpus.hpp"
#include "english_read.hpp"

namespace tcdb::english {

using namespace moekd;
using namespace moekd::data;

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

}  // namespace tcdb::english

// english_test.cpp — the English text readers and task builders of the TCD example (english.hpp):
// WordNet and fortune parsers on small files in the real formats, the built-in tasks (balance,
// no train/dev overlap, hard negatives really another sense of the same word), corpus lines,
// out-of-distribution text, bad inputs; and the same on the real Debian files when
// scripts/build_tcd_corpus.sh has been run (MOEKD_TCD_CORPUS=<its OUT_DIR>) or the packages are
// installed (/usr/share/wordnet, /usr/share/games/fortunes); skipped with a message otherwise.
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "english.hpp"

using namespace moekd;
using namespace tcdb;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {
std::string fresh_dir(const std::string& name) {
    const fs::path d = fs::temp_directory_path() / ("moekd_english_test_" + name);
    fs::remove_all(d);
    fs::create_directories(d);
    return d.string();
}
void write(const std::string& path, const std::string& text) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream f(path, std::ios::binary);
    f << text;
}
const std::string kLicense =
    "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    "  2 Princeton University under the following license.  \n"
    "  3   \n";

// Synthetic WordNet: `nwords` made-up nouns with 3 senses each (2 examples per sense that use
// the word), plus a few verbs / adjectives / adverbs; lines in the real data-file layout.
std::string synthetic_dir(int nwords) {
    const auto d = fresh_dir("wn_synth");
    std::string noun = kLicense, verb = kLicense, adj = kLicense, adv = kLicense;
    int64_t off = 1000;
    auto word = [](int i) {
        std::string w = "zq";
        for (int k = 0; k < 3; ++k, i /= 26) w.push_back(static_cast<char>('a' + i % 26));
        return w;
    };
    for (int i = 0; i < nwords; ++i)
        for (int s = 0; s < 3; ++s) {
            const std::string w = word(i);
            noun += std::to_string(off++) + " 05 n 01 " + w + " " + std::to_string(s) + " 000 | meaning " +
                    std::to_string(s) + " of " + w + " in general; \"the " + w + " was here\"; \"a " + w +
                    " of sense " + std::to_string(s) + "\"  \n";
        }
    for (int i = 0; i < 40; ++i) {
        const std::string n = std::to_string(i);
        verb +=
            std::to_string(off++) + " 29 v 01 run" + n + " 0 000 01 + 02 00 | move fast on foot, variant " + n + "  \n";
        adj += std::to_string(off++) + " 00 " + (i % 2 ? "s" : "a") + " 01 able" + n +
               "(a) 0 000 | having the means number " + n + "  \n";
        adv += std::to_string(off++) + " 02 r 01 quickly" + n + " 0 000 | in a quick manner number " + n + "  \n";
    }
    write(d + "/data.noun", noun);
    write(d + "/data.verb", verb);
    write(d + "/data.adj", adj);
    write(d + "/data.adv", adv);
    return d;
}

// Where the real files are, or "" (with the reason in `why`).
std::string real_path(const std::string& sub, const std::string& system, std::string& why) {
    if (const char* c = std::getenv("MOEKD_TCD_CORPUS")) {
        const std::string p = std::string(c) + "/root/" + sub;
        if (fs::exists(p)) return p;
    }
    if (fs::exists(system)) return system;
    why = "no " + sub + ": run scripts/build_tcd_corpus.sh DIR and set MOEKD_TCD_CORPUS=DIR (or install the package)";
    return "";
}

// Checks a built task: labels in range, both splits non-empty, no text (pair) in both splits.
void check_split(const english::BuiltTask& t) {
    REQUIRE(!t.train.empty());
    REQUIRE(!t.dev.empty());
    std::set<std::string> train_keys;
    for (const auto& e : t.train) {
        CHECK((e.label >= 0 && e.label < t.info.num_labels()));
        train_keys.insert(e.text_a + "\t" + e.text_b);
    }
    for (const auto& e : t.dev) {
        CHECK((e.label >= 0 && e.label < t.info.num_labels()));
        CHECK(train_keys.count(e.text_a + "\t" + e.text_b) == 0);
    }
}
std::vector<double> label_shares(const std::vector<data::GlueExample>& ex, int64_t k) {
    std::vector<double> s(static_cast<size_t>(k));
    for (const auto& e : ex) s[static_cast<size_t>(e.label)] += 1.0 / static_cast<double>(ex.size());
    return s;
}

// WNGLOSS negatives: the definition belongs to a synset that shares a lemma (same part of
// speech) with a synset the example belongs to, and is not that synset's own definition.
void check_hard_negatives(const english::BuiltTask& t, const std::vector<english::Synset>& wn) {
    std::map<std::string, std::vector<size_t>> by_example, by_gloss;
    for (size_t i = 0; i < wn.size(); ++i) {
        for (const auto& e : wn[i].examples) by_example[e].push_back(i);
        by_gloss[wn[i].gloss].push_back(i);
    }
    auto group = [](char p) { return p == 's' ? 'a' : p; };
    int64_t negatives = 0, positives = 0;
    for (const auto* split : {&t.train, &t.dev})
        for (const auto& e : *split) {
            const auto& owners = by_example[e.text_a];
            REQUIRE(!owners.empty());
            const auto& defs = by_gloss[e.text_b];
            REQUIRE(!defs.empty());
            bool own = false, sibling = false;
            for (size_t s : owners)
                for (size_t d : defs) {
                    own |= s == d;
                    if (s != d && group(wn[s].pos) == group(wn[d].pos))
                        for (const auto& w : wn[s].words)
                            for (const auto& v : wn[d].words)
                                sibling |= english::detail::lower_ascii(w) == english::detail::lower_ascii(v);
                }
            if (e.label == 1) {
                ++positives;
                CHECK(own);
            } else {
                ++negatives;
                CHECK(!own);
                CHECK(sibling);
            }
        }
    CHECK(positives > 0);
    CHECK(negatives > 0);
}
}  // namespace

TEST_CASE("read_wordnet: real data-file layout, markers, glosses and examples") {
    const auto d = fresh_dir("wn");
    write(
        d + "/data.noun",
        kLicense +
            "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 ~ 00002137 n 0000 ~ 04424418 n 0000 | "
            "that which is perceived or known or inferred to have its own distinct existence (living or nonliving)  \n"
            "00002137 03 n 02 abstraction 0 abstract_entity 0 001 @ 00001740 n 0000 | a general concept; "
            "\"a grammar; or a syntax\"; \"an abstraction of the data\" - Shakespeare  \n");
    write(d + "/data.verb",
          kLicense +
              "00002325 29 v 01 respire 1 005 $ 00001740 v 0000 @ 02108395 v 0000 + 03110323 a 0101 "
              "+ 00831191 n 0103 + 00830811 n 0101 01 + 02 00 | undergo respiration; \"we respire\"  \n");
    write(d + "/data.adj",
          kLicense +
              "00001740 00 a 01 able(a) 0 005 = 05207437 n 0000 | (usually followed by `to') having the "
              "necessary means or skill; \"able to swim\"; \"she was able to program her computer\"  \n"
              "00001950 00 s 0a above-mentioned 0 above-named 0 x 0 y 0 z 0 p 0 q 0 r 0 s 0 t(ip) 0 000 | mentioned "
              "before  \n");
    write(d + "/data.adv",
          kLicense +
              "00001740 02 r 01 a_cappella 0 000 | without musical accompaniment; \"they performed a cappella\"  \n"
              "00001837 02 r 01 readily 0 000 | in a ready manner: \"he was readily available\"  \n");
    const auto wn = english::read_wordnet(d);
    REQUIRE(wn.size() == 7);
    CHECK(wn[0].pos == 'n');
    CHECK(wn[0].offset == 1740);
    CHECK(wn[0].words == std::vector<std::string>{"entity"});
    CHECK(wn[0].gloss ==
          "that which is perceived or known or inferred to have its own distinct existence (living or nonliving)");
    CHECK(wn[0].examples.empty());
    CHECK(wn[1].words == std::vector<std::string>{"abstraction", "abstract entity"});
    CHECK(wn[1].gloss == "a general concept");
    // ';' inside quotes stays in the example; text after the closing quote (attribution) is dropped
    REQUIRE(wn[1].examples.size() == 2);
    CHECK(wn[1].examples[0] == "a grammar; or a syntax");
    CHECK(wn[1].examples[1] == "an abstraction of the data");
    CHECK(wn[2].pos == 'v');
    CHECK(wn[2].gloss == "undergo respiration");
    CHECK(wn[2].examples == std::vector<std::string>{"we respire"});
    CHECK(wn[3].words == std::vector<std::string>{"able"});  // "(a)" marker removed
    CHECK(wn[3].examples == std::vector<std::string>{"able to swim", "she was able to program her computer"});
    CHECK(wn[4].pos == 's');
    CHECK(wn[4].words.size() == 10);  // w_cnt is hex: 0a
    CHECK(wn[4].words.back() == "t");
    CHECK(wn[5].words == std::vector<std::string>{"a cappella"});
    CHECK(wn[6].gloss == "in a ready manner");  // `definition: "example"` form
    CHECK(wn[6].examples == std::vector<std::string>{"he was readily available"});

    write(d + "/data.adv", kLicense + "00001740 02 r zz a_cappella 0 000 | oops  \n");
    CHECK_THROWS_WITH(english::read_wordnet(d), Contains("data.adv:4") && Contains("bad word count"));
    write(d + "/data.adv", kLicense + "hello world\n");
    CHECK_THROWS_WITH(english::read_wordnet(d), Contains("data.adv:4: not a synset line"));
    write(d + "/data.adv", kLicense);
    CHECK_THROWS_WITH(english::read_wordnet(d), Contains("data.adv' holds no synsets"));
    fs::remove(d + "/data.adv");
    CHECK_THROWS_WITH(english::read_wordnet(d), Contains("cannot open") && Contains("data.adv"));
    fs::create_directories(d + "/data.adv");  // issue 16: a directory read as "holds no synsets"
    CHECK_THROWS_WITH(english::read_wordnet(d), Contains(d + "/data.adv': is a directory"));
}

TEST_CASE("read_fortunes: category files, separators, overstrikes, skips .dat, .u8 and subdirectories") {
    const auto d = fresh_dir("fortunes");
    write(d + "/food",
          "Eat dessert first.\n%\nA\tbagel is a doughnut\nwith the sin removed.\n\t\t-- George Rosenblum\n%\n%\n"
          "Last one, no trailing separator");
    write(d + "/art", "This is the ____\b\b\b\bLAST time!\x07\n%\nArt is long.\r\n%\n");
    write(d + "/art.dat", std::string("\x00\x00\x00\x02\x00\x00", 6));
    fs::create_symlink(d + "/art", d + "/art.u8");
    write(d + "/off/rude", "not to be read\n%\n");
    const auto f = english::read_fortunes(d);
    REQUIRE(f.size() == 5);
    CHECK(f[0].category == "art");  // sorted by category
    CHECK(f[0].text == "This is the LAST time!");
    CHECK(f[1].text == "Art is long.");
    CHECK(f[2].category == "food");
    CHECK(f[2].text == "Eat dessert first.");
    CHECK(f[3].text == "A\tbagel is a doughnut\nwith the sin removed.\n\t\t-- George Rosenblum");
    CHECK(f[4].text == "Last one, no trailing separator");

    write(d + "/bad", "fine\n%\ncaf\xE9 au lait\n");
    CHECK_THROWS_WITH(english::read_fortunes(d), Contains(d + "/bad:3: invalid UTF-8"));
    CHECK_THROWS_WITH(english::read_fortunes(d + "/nope"), Contains("is not a directory"));
    const auto e = fresh_dir("fortunes_empty");
    write(e + "/empty", "%\n%\n");
    CHECK_THROWS_WITH(english::read_fortunes(e), Contains("no fortunes"));
}

TEST_CASE("build_task WNGLOSS / WNPOS on synthetic WordNet: balance, disjoint splits, hard negatives, seeds") {
    const auto wn = english::read_wordnet(synthetic_dir(60));
    const std::vector<english::Fortune> none;
    const auto g = english::build_task("WNGLOSS", wn, none, 7);
    check_split(g);
    CHECK(g.info.pair);
    const auto share = label_shares(g.train, 2);
    CHECK(share[1] == Approx(0.5));  // one positive and one negative per example
    check_hard_negatives(g, wn);
    std::set<std::string> train_ex;  // no usage example in both splits
    for (const auto& e : g.train) train_ex.insert(e.text_a);
    for (const auto& e : g.dev) CHECK(train_ex.count(e.text_a) == 0);

    const auto g2 = english::build_task("WNGLOSS", wn, none, 7);
    REQUIRE(g2.train.size() == g.train.size());
    for (size_t i = 0; i < g.train.size(); ++i) CHECK(g2.train[i].text_b == g.train[i].text_b);
    const auto g3 = english::build_task("WNGLOSS", wn, none, 8);  // another seed: another split
    std::set<std::string> dev7, dev8;
    for (const auto& e : g.dev) dev7.insert(e.text_a);
    for (const auto& e : g3.dev) dev8.insert(e.text_a);
    CHECK(dev7 != dev8);
    const auto cut = english::build_task("WNGLOSS", wn, none, 7, 10, 4);
    CHECK(cut.train.size() == 10);
    CHECK(cut.dev.size() == 4);

    const auto p = english::build_task("WNPOS", wn, none, 3);
    check_split(p);
    CHECK(p.info.labels == std::vector<std::string>{"noun", "verb", "adj", "adv"});
    std::vector<int64_t> all(4);
    for (const auto* s : {&p.train, &p.dev})
        for (const auto& e : *s) ++all[static_cast<size_t>(e.label)];
    CHECK(all == std::vector<int64_t>{40, 40, 40, 40});  // capped at the smallest class (40 adverbs)
    for (const auto& e : p.train)
        if (e.text_a.rfind("in a quick manner", 0) == 0) CHECK(p.info.labels[static_cast<size_t>(e.label)] == "adv");

    CHECK_THROWS_WITH(english::build_task("WNPOS", {}, none, 1), Contains("no WordNet synsets"));
    CHECK_THROWS_WITH(english::build_task("SST-2", wn, none, 1), Contains("not a built-in"));
    CHECK_THROWS_WITH(english::build_task("XYZ", wn, none, 1), Contains("unknown task 'XYZ'"));
}

TEST_CASE("build_task FORTUNE on synthetic fortunes: top categories, catch-alls left out, balance") {
    std::vector<english::Fortune> f;
    for (int c = 0; c < 12; ++c)  // category c has 30 + 5c fortunes
        for (int i = 0; i < 30 + 5 * c; ++i)
            f.push_back({"topic" + std::to_string(100 + c),
                         "fortune number " + std::to_string(i) + " about topic" + std::to_string(100 + c)});
    for (int i = 0; i < 500; ++i) f.push_back({"cookie", "a cookie fortune number " + std::to_string(i)});
    f.push_back({"topic111", "short"});                          // under 20 characters: dropped
    f.push_back({"topic111", std::string(500, 'x') + " long"});  // over 400: dropped
    const auto t = english::build_task("FORTUNE", {}, f, 5);
    check_split(t);
    REQUIRE(t.info.labels.size() == 10);
    CHECK(t.info.labels.front() == "topic102");  // the two smallest topics and "cookie" are out
    CHECK(std::find(t.info.labels.begin(), t.info.labels.end(), "cookie") == t.info.labels.end());
    std::map<std::string, int64_t> n;
    for (const auto* s : {&t.train, &t.dev})
        for (const auto& e : *s) {
            ++n[t.info.labels[static_cast<size_t>(e.label)]];
            CHECK(e.text_a.find(t.info.labels[static_cast<size_t>(e.label)]) != std::string::npos);  // its own category
        }
    CHECK(n["topic102"] == 40);
    CHECK(n["topic111"] == 80);  // 85 capped at twice the smallest kept class
    CHECK_THROWS_WITH(english::build_task("FORTUNE", {}, {}, 1), Contains("no fortunes"));
}

TEST_CASE("pretraining_lines, split_lines, read_text_lines") {
    const auto wn = english::read_wordnet(synthetic_dir(3));
    const std::vector<english::Fortune> f{{"food", "Eat\n  dessert   first."}, {"x", "tiny"}};
    const auto lines = english::pretraining_lines(wn, f);
    CHECK(std::find(lines.begin(), lines.end(), "Eat dessert first.") != lines.end());
    CHECK(std::find(lines.begin(), lines.end(), "tiny") == lines.end());  // under min_chars
    CHECK(std::find(lines.begin(), lines.end(), "zqaaa: meaning 0 of zqaaa in general") != lines.end());
    CHECK(std::find(lines.begin(), lines.end(), "the zqaaa was here") != lines.end());
    english::PretrainOptions only_fortunes;
    only_fortunes.glosses = only_fortunes.examples = false;
    CHECK(english::pretraining_lines(wn, f, only_fortunes) == std::vector<std::string>{"Eat dessert first."});
    english::PretrainOptions without;  // keep a task's dev texts out of the corpus
    without.exclude = english::example_texts(
        {{"the zqaaa was here", "meaning 0 of zqaaa in general", 1, 0}, {"Eat dessert  first.", "", 0, 0}});
    const auto lines2 = english::pretraining_lines(wn, f, without);
    CHECK(std::find(lines2.begin(), lines2.end(), "the zqaaa was here") == lines2.end());
    CHECK(std::find(lines2.begin(), lines2.end(), "zqaaa: meaning 0 of zqaaa in general") == lines2.end());
    CHECK(std::find(lines2.begin(), lines2.end(), "Eat dessert first.") == lines2.end());
    CHECK(std::find(lines2.begin(), lines2.end(), "a zqaaa of sense 0") != lines2.end());
    CHECK(lines2.size() == lines.size() - 5);  // the example occurs in all 3 senses, + 1 gloss, + 1 fortune

    std::vector<std::string> many;
    for (int i = 0; i < 2000; ++i) many.push_back("line " + std::to_string(i % 1500));  // with duplicates
    const auto s = english::split_lines(many, 0.1, 1);
    CHECK(s.train.size() + s.heldout.size() == many.size());
    CHECK(s.heldout.size() > 100);
    CHECK(s.heldout.size() < 300);
    const std::set<std::string> tr(s.train.begin(), s.train.end());
    for (const auto& h : s.heldout) CHECK(tr.count(h) == 0);

    const auto d = fresh_dir("text");
    write(d + "/a.txt", "first line\n\n  second\t line  \n");
    CHECK(english::read_text_lines(d + "/a.txt") == std::vector<std::string>{"first line", "second line"});
    write(d + "/b.txt", "ok\nbad \xC3\x28 byte\n");
    CHECK_THROWS_WITH(english::read_text_lines(d + "/b.txt"), Contains("b.txt:2: invalid UTF-8 at byte 5"));
    write(d + "/c.txt", "\n  \n");
    CHECK_THROWS_WITH(english::read_text_lines(d + "/c.txt"), Contains("c.txt' is empty"));
    // issue 16: a directory was "is empty (no text)"; now it is named as a directory
    fs::create_directories(d + "/adir");
    CHECK_THROWS_WITH(english::read_text_lines(d + "/adir"), Contains("read_text_lines: '" + d + "/adir': is a directory"));
    CHECK_THROWS_WITH(english::read_text_lines(d + "/missing.txt"), Contains("'" + d + "/missing.txt': missing file"));
    // a pipe (process substitution, /dev/fd/N) reads like a file
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const std::string piped = "from a pipe\n\nsecond  line";
    REQUIRE(::write(fds[1], piped.data(), piped.size()) == ssize_t(piped.size()));
    ::close(fds[1]);
    CHECK(english::read_text_lines("/dev/fd/" + std::to_string(fds[0])) == std::vector<std::string>{"from a pipe", "second line"});
    ::close(fds[0]);
}

namespace {
// A little-endian .mo catalog with the given (msgid, msgstr) pairs (already sorted).
void write_mo(const std::string& path, const std::vector<std::pair<std::string, std::string>>& e) {
    const uint32_t n = static_cast<uint32_t>(e.size()), o = 28, t = o + 8 * n;
    std::string strings;
    std::vector<uint32_t> tab;
    uint32_t base = t + 8 * n;
    for (int side = 0; side < 2; ++side)
        for (const auto& [id, str] : e) {
            const std::string& s = side ? str : id;
            tab.push_back(static_cast<uint32_t>(s.size()));
            tab.push_back(base + static_cast<uint32_t>(strings.size()));
            strings += s + '\0';
        }
    std::string b;
    auto u32 = [&](uint32_t v) {
        for (int k = 0; k < 4; ++k) b.push_back(static_cast<char>((v >> (8 * k)) & 0xFF));
    };
    for (uint32_t v : {0x950412deu, 0u, n, o, t, 0u, 0u}) u32(v);
    for (uint32_t v : tab) u32(v);
    write(path, b + strings);
}
}  // namespace

TEST_CASE("read_ood_text: code, ui and prose domains") {
    const auto d = fresh_dir("ood");
    write(d + "/inc/a.h", "/* Licence text.  */\n\n#ifndef A_H\n#define A_H\nint f(int x);\n#endif\n");
    write(d + "/inc/sub/b.hpp", "/* Licence text.  */\n\nstruct B { int y; };\n");
    write(d + "/inc/notes.txt", "not code\n");
    const auto code = english::read_ood_text(d + "/inc", "code");
    CHECK(code == std::vector<std::string>{"/* Licence text. */", "#ifndef A_H #define A_H int f(int x); #endif",
                                           "struct B { int y; };"});  // the repeated licence kept once
    write(d + "/doc/guide.txt",
          "Git is a fast, scalable, distributed revision control system.\n"
          "It has a rich command set.\n\n"
          "| a | b |\n|---|---|\n| 1 | 2 |\n\nToo short here.\n");
    write(d + "/doc/image.png", "Binary-ish content that is not prose at all but is long enough.\n");
    const auto prose = english::read_ood_text(d + "/doc", "prose");
    CHECK(prose == std::vector<std::string>{
                       "Git is a fast, scalable, distributed revision control system. It has a rich command set."});
    write_mo(d + "/loc/de/LC_MESSAGES/x.mo", {{"", "Content-Type: text/plain; charset=UTF-8\n"},
                                              {"Cannot open the file %s", "Kann die Datei %s nicht öffnen"},
                                              {"File", "Datei"},
                                              {"Write the archive to  stdout", "Archiv ausgeben"}});
    write_mo(d + "/loc/fr/LC_MESSAGES/x.mo", {{"", "Content-Type: text/plain; charset=UTF-8\n"},
                                              {"Cannot open the file %s", "Impossible d'ouvrir %s"}});
    const auto ui = english::read_ood_text(d + "/loc", "ui");
    CHECK(ui == std::vector<std::string>{"Cannot open the file %s", "Write the archive to stdout"});
    std::string longp;
    for (int i = 0; i < 300; ++i) longp += "word" + std::to_string(i) + " ";
    write(d + "/long/l.md", longp + "\n");
    const auto pieces = english::read_ood_text(d + "/long", "prose");
    REQUIRE(pieces.size() > 1);
    std::string joined;
    for (const auto& p : pieces) {
        CHECK(p.size() <= 600);
        joined += p + " ";
    }
    CHECK(joined == longp);
    CHECK(english::read_ood_text(d + "/long", "prose", 1).size() == 1);
    CHECK_THROWS_WITH(english::read_ood_text(d + "/inc", "poetry"), Contains("unknown domain 'poetry'"));
    CHECK_THROWS_WITH(english::read_ood_text(d + "/doc", "code"), Contains("no code text found"));
    CHECK_THROWS_WITH(english::read_ood_text(d + "/missing", "code"), Contains("does not exist"));
}

TEST_CASE("real Debian files: WordNet 3.0, fortunes, built tasks, OOD text") {
    std::string why;
    const std::string wdir = real_path("usr/share/wordnet", "/usr/share/wordnet", why);
    const std::string fdir = real_path("usr/share/games/fortunes", "/usr/share/games/fortunes", why);
    if (wdir.empty() || fdir.empty()) {
        WARN("skipped: " << why);
        return;
    }
    const auto wn = english::read_wordnet(wdir);
    std::map<char, int64_t> per_pos;
    for (const auto& s : wn) ++per_pos[s.pos];
    // WordNet 3.0's published counts (wnstats(7WN)): 82115 noun, 13767 verb, 18156 adjective
    // (incl. satellite), 3621 adverb synsets.
    CHECK(per_pos['n'] == 82115);
    CHECK(per_pos['v'] == 13767);
    CHECK(per_pos['a'] + per_pos['s'] == 18156);
    CHECK(per_pos['r'] == 3621);
    for (const auto& s : wn) {
        CHECK(!s.words.empty());
        for (const auto& e : s.examples) CHECK(e.find('"') == std::string::npos);
    }
    const auto f = english::read_fortunes(fdir);
    std::set<std::string> cats;
    for (const auto& x : f) cats.insert(x.category);
    CHECK(cats.count("computers") == 1);
    CHECK(cats.count("food") == 1);
    for (const auto& x : f) CHECK(x.text.find('\b') == std::string::npos);

    for (const char* name : {"FORTUNE", "WNPOS", "WNGLOSS"}) {
        const auto t = english::build_task(name, wn, f, 1);
        INFO(name << ": " << t.train.size() << " train, " << t.dev.size() << " dev");
        check_split(t);
        const auto sh = label_shares(t.train, t.info.num_labels());
        const double lo = *std::min_element(sh.begin(), sh.end()), hi = *std::max_element(sh.begin(), sh.end());
        CHECK(hi <= 3 * lo);  // balanced-ish: no class more than 3x another
        if (std::string(name) == "WNGLOSS") check_hard_negatives(t, wn);
    }
    const auto lines = english::pretraining_lines(wn, f);
    CHECK(lines.size() > wn.size());  // glosses + examples + fortunes

    const char* c = std::getenv("MOEKD_TCD_CORPUS");
    if (!c) {
        WARN("OOD part skipped: set MOEKD_TCD_CORPUS to the OUT_DIR of scripts/build_tcd_corpus.sh");
        return;
    }
    const std::string r = std::string(c) + "/root";
    for (auto [sub, dom] : std::vector<std::pair<std::string, std::string>>{
             {"usr/include", "code"}, {"usr/share/locale", "ui"}, {"usr/share/doc/git-doc", "prose"}}) {
        const auto v = english::read_ood_text(r + "/" + sub, dom);
        INFO(dom << ": " << v.size() << " segments");
        CHECK(v.size() > 100);
        for (const auto& s : v) CHECK(data::is_valid_utf8(s));
    }
}

// bleu_test.cpp — unit tests of moekd/text/bleu.hpp: the 13a tokeniser's rules, n-gram statistics,
// exponential smoothing, brevity penalty, multi-reference rules and bad input. (Agreement with
// the real sacreBLEU on real text is bleu_parity.py's job.)
#include <catch2/catch.hpp>

#include <cmath>

#include "moekd/text/bleu.hpp"

using namespace moekd::text;

TEST_CASE("13a tokeniser rules", "[bleu]") {
    CHECK(tokenize_13a("Hello, world!") == "Hello , world !");
    CHECK(tokenize_13a("It costs 3.14 or 1,000.") == "It costs 3.14 or 1,000 .");  // no split between digits
    CHECK(tokenize_13a("pages 2-3 and a-b") == "pages 2 - 3 and a-b");             // dash split after a digit only
    CHECK(tokenize_13a("&quot;x&quot; &amp; &lt;b&gt;") == "\" x \" & < b >");
    CHECK(tokenize_13a("a <skipped> b") == "a b");
    CHECK(tokenize_13a("line-\nbreak\nhere") == "linebreak here");
    CHECK(tokenize_13a("  spaced \t out  ") == "spaced out");
    CHECK(tokenize_13a("a\xC2\xA0" "b\xE3\x80\x80" "c") == "a b c");                   // U+00A0, U+3000 are spaces
    CHECK(tokenize_13a("x\xE2\x80\x8B" "y") == "x\xE2\x80\x8B" "y");                    // U+200B is not
    CHECK(tokenize_13a("हिन्दी, वाक्य।") == "हिन्दी , वाक्य।");
    CHECK(tokenize_13a("") == "");
}

TEST_CASE("BLEU of identical and empty hypotheses", "[bleu]") {
    const std::vector<std::string> refs = {"The cat sat on the mat .", "Le chat , sur le tapis !"};
    CHECK(corpus_bleu(refs, refs).score == Approx(100.0));
    const BleuScore e = corpus_bleu({"", ""}, refs);
    CHECK(e.score == 0.0);
    CHECK(e.bp == 0.0);
    CHECK(e.stats.hyp_len == 0);
    CHECK(e.stats.ref_len == 14);  // 7 + 7 tokens
    CHECK(corpus_bleu(std::vector<std::string>{}, std::vector<std::string>{}).score == 0.0);
}

TEST_CASE("exponential smoothing and brevity penalty follow the formulas", "[bleu]") {
    // 1-grams 4/4, 2-grams 1/3 (a b), 3-grams 0/2 -> 100/(2*2), 4-grams 0/1 -> 100/(4*1)
    const BleuScore s = corpus_bleu({"a b c d"}, {"a b d c"});
    CHECK(s.stats.correct == std::array<int64_t, 4>{4, 1, 0, 0});
    CHECK(s.stats.total == std::array<int64_t, 4>{4, 3, 2, 1});
    CHECK(s.precisions[2] == Approx(25.0));
    CHECK(s.precisions[3] == Approx(25.0));
    const double expect = std::exp((std::log(100.0) + std::log(100.0 / 3) + std::log(25.0) + std::log(25.0)) / 4);
    CHECK(s.score == Approx(expect).epsilon(1e-12));
    // short hypothesis: no 3-grams at all -> corpus BLEU 0, sentence BLEU (effective order 2) > 0
    const BleuScore c = corpus_bleu({"a b"}, {"a b c d e"});
    CHECK(c.score == Approx(0.0).margin(1e-12));
    CHECK(c.bp == Approx(std::exp(1.0 - 5.0 / 2.0)));
    CHECK(sentence_bleu("a b", "a b c d e").score == Approx(100.0 * std::exp(1.0 - 5.0 / 2.0)));
}

TEST_CASE("corpus statistics are sums of segment statistics, clipping", "[bleu]") {
    const std::vector<std::string> hyps = {"the the the the", "a b c", "x y z w v"};
    const std::vector<std::string> refs = {"the cat is on the mat", "a b c", "x y"};
    BleuStats sum;
    for (size_t i = 0; i < hyps.size(); ++i) sum += segment_stats(hyps[i], {refs[i]});
    const BleuScore s = corpus_bleu(hyps, refs);
    CHECK(s.stats.hyp_len == sum.hyp_len);
    CHECK(s.stats.ref_len == sum.ref_len);
    CHECK(s.stats.correct == sum.correct);
    CHECK(segment_stats("the the the the", {"the cat is on the mat"}).correct[0] == 2);  // clipped to the ref count
    CHECK(s.score == Approx(bleu_from_stats(sum).score));
}

TEST_CASE("several references: closest length (ties to the shorter) and max counts", "[bleu]") {
    const BleuStats st = segment_stats("a b c", {"a b c d e f g", "a", "a b c d e"});
    CHECK(st.ref_len == 1);  // |3-7| = 4, |3-1| = 2, |3-5| = 2: tie between 1 and 5 -> the shorter
    CHECK(st.correct == std::array<int64_t, 4>{3, 2, 1, 0});  // n-grams matched in any reference
}

TEST_CASE("bad input is reported", "[bleu]") {
    CHECK_THROWS_WITH(corpus_bleu({"a"}, std::vector<std::string>{"a", "b"}),
                      Catch::Contains("1 hypotheses but 2 references"));
    CHECK_THROWS_WITH(corpus_bleu({"a"}, std::vector<std::vector<std::string>>{{"a"}, {}}),
                      Catch::Contains("reference stream 1 has 0 lines"));
    CHECK_THROWS_WITH(segment_stats("a", {}), Catch::Contains("at least one reference"));
}

TEST_CASE("signature and verbose line", "[bleu]") {
    CHECK(bleu_signature() == "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp");
    const std::string v = corpus_bleu({"a b c d"}, {"a b c d"}).verbose();
    CHECK(v.rfind("BLEU = 100.0000 100.0/100.0/100.0/100.0 (BP = 1.000 ratio = 1.000 hyp_len = 4 ref_len = 4)", 0) == 0);
}

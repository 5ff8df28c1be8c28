// bleu_score.cpp — command-line front end of moekd/text/bleu.hpp for the sacreBLEU parity test
// (bleu_parity.py runs it and compares with the `sacrebleu` package):
//   bleu_score tok FILE          the 13a tokenisation of every line
//   bleu_score corpus REF HYP    corpus BLEU as one JSON object
//   bleu_score sentence REF HYP  sentence BLEU (effective order) of every line pair, one per line
#include <cstdio>
#include <iostream>
#include <string>

#include "moekd/data/parallel.hpp"
#include "moekd/text/bleu.hpp"

using moekd::text::BleuScore;

static void print_json(const BleuScore& s) {
    std::printf("{\"score\": %.17g, \"bp\": %.17g, \"ratio\": %.17g, \"hyp_len\": %lld, \"ref_len\": %lld, \"precisions\": [",
                s.score, s.bp, s.ratio, (long long)s.stats.hyp_len, (long long)s.stats.ref_len);
    for (int n = 0; n < 4; ++n) std::printf("%s%.17g", n ? ", " : "", s.precisions[n]);
    std::printf("], \"counts\": [");
    for (int n = 0; n < 4; ++n) std::printf("%s%lld", n ? ", " : "", (long long)s.stats.correct[n]);
    std::printf("], \"totals\": [");
    for (int n = 0; n < 4; ++n) std::printf("%s%lld", n ? ", " : "", (long long)s.stats.total[n]);
    std::printf("], \"signature\": \"%s\", \"verbose\": \"%s\"}\n", moekd::text::bleu_signature().c_str(), s.verbose().c_str());
}

int main(int argc, char** argv) try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "tok" && argc == 3) {
        for (const auto& l : moekd::data::read_lines_utf8(argv[2])) std::cout << moekd::text::tokenize_13a(l) << '\n';
        return 0;
    }
    if ((mode == "corpus" || mode == "sentence") && argc == 4) {
        const auto refs = moekd::data::read_lines_utf8(argv[2]);
        const auto hyps = moekd::data::read_lines_utf8(argv[3]);
        if (mode == "corpus") {
            print_json(moekd::text::corpus_bleu(hyps, refs));
        } else {
            MOEKD_CHECK(refs.size() == hyps.size(), "bleu_score: line counts differ");
            for (size_t i = 0; i < refs.size(); ++i) std::printf("%.17g\n", moekd::text::sentence_bleu(hyps[i], refs[i]).score);
        }
        return 0;
    }
    std::fprintf(stderr, "usage: bleu_score tok FILE | corpus REF HYP | sentence REF HYP\n");
    return 2;
} catch (const std::exception& e) {
    std::fprintf(stderr, "bleu_score: %s\n", e.what());
    return 1;
}

// glue_test.cpp — GLUE TSV readers (data/glue.hpp) on small files written here in each real
// GLUE layout, the built-in layout's round trip through write_glue_tsv, and the bad inputs
// (wrong column count naming file:line, unknown label, bad score, bad UTF-8, empty file, unknown
// task).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include <moekd/data/glue.hpp>

using namespace moekd;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {
// A fresh directory per test case under the system temp dir.
std::string fresh_dir(const std::string& name) {
    const fs::path d = fs::temp_directory_path() / ("moekd_glue_test_" + name);
    fs::remove_all(d);
    fs::create_directories(d);
    return d.string();
}
void write(const std::string& path, const std::string& text) {
    std::ofstream f(path, std::ios::binary);
    f << text;
}
}  // namespace

TEST_CASE("glue: CoLA (no header, 4 columns)") {
    const auto d = fresh_dir("cola");
    write(d + "/train.tsv",
          "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n"
          "gj04\t0\t*\tThey drank the pub.\n"
          "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n");
    auto s = data::read_glue_split(d, "CoLA", "train");
    REQUIRE(s.examples.size() == 3);  // the first line is data, not a header
    CHECK(s.examples[0].text_a == "Our friends won't buy this analysis, let alone the next one we propose.");
    CHECK(s.examples[0].label == 1);
    CHECK(s.examples[1].text_a == "They drank the pub.");
    CHECK(s.examples[1].label == 0);
    CHECK(s.examples[1].text_b.empty());
    CHECK(s.info.metrics == std::vector<std::string>{"mcc"});
    CHECK(s.file == d + "/train.tsv");
}

TEST_CASE("glue: SST-2, MRPC, QQP, QNLI, RTE, WNLI layouts") {
    const auto d = fresh_dir("many");
    write(d + "/train.tsv",
          "sentence\tlabel\nhide new secretions from the parental units \t0\r\ncontains no wit \t1\n");
    auto sst = data::read_glue_split(d, "SST-2", "train");
    REQUIRE(sst.examples.size() == 2);
    CHECK(sst.examples[0].text_a == "hide new secretions from the parental units ");
    CHECK(sst.examples[1].label == 1);  // the \r of a CRLF file is not part of the label

    write(d + "/dev.tsv",
          "\xEF\xBB\xBFQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
          "1\t702876\t702977\tAmrozi accused his brother.\tReferring to him as only \"the witness\".\n"
          "0\t2108705\t2108831\tYucaipa owned Dominick's.\tYucaipa bought Dominick's in 1995.\n");
    auto mrpc = data::read_glue_split(d, "mrpc", "dev");  // case-insensitive name
    REQUIRE(mrpc.examples.size() == 2);
    CHECK(mrpc.info.name == "MRPC");
    CHECK(mrpc.examples[0].text_a == "Amrozi accused his brother.");
    CHECK(mrpc.examples[0].text_b == "Referring to him as only \"the witness\".");
    CHECK(mrpc.examples[0].label == 1);
    CHECK(mrpc.examples[1].label == 0);
    CHECK(mrpc.info.metrics == std::vector<std::string>{"f1", "acc"});

    write(d + "/dev.tsv",
          "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
          "201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so beautiful?\t0\n");
    auto qqp = data::read_glue_split(d, "QQP", "dev");
    REQUIRE(qqp.examples.size() == 1);
    CHECK(qqp.examples[0].text_b == "Why are hispanics so beautiful?");
    CHECK(qqp.examples[0].label == 0);

    write(d + "/dev.tsv",
          "index\tquestion\tsentence\tlabel\n"
          "0\tWhat came into force after the new constitution was herald?\tAs of that day, the new constitution "
          "heralding "
          "the Second Republic came into force.\tentailment\n"
          "1\tWhat is the first major city in the stream of the Rhine?\tThe most important tributaries are the Ill.\t"
          "not_entailment\n");
    auto qnli = data::read_glue_split(d, "QNLI", "dev");
    REQUIRE(qnli.examples.size() == 2);
    CHECK(qnli.examples[0].text_a == "What came into force after the new constitution was herald?");
    CHECK(qnli.examples[0].label == 0);
    CHECK(qnli.examples[1].label == 1);

    write(d + "/train.tsv",
          "index\tsentence1\tsentence2\tlabel\n0\tNo Weapons of Mass Destruction Found in Iraq Yet.\t"
          "Weapons of Mass Destruction Found in Iraq.\tnot_entailment\n");
    auto rte = data::read_glue_split(d, "RTE", "train");
    CHECK(rte.examples.at(0).text_b == "Weapons of Mass Destruction Found in Iraq.");
    CHECK(rte.examples.at(0).label == 1);
    write(d + "/train.tsv",
          "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin through a carrot.\tThe carrot had a hole.\t1\n");
    auto wnli = data::read_glue_split(d, "WNLI", "train");
    CHECK(wnli.examples.at(0).label == 1);
}

TEST_CASE("glue: STS-B scores and MNLI's train / dev_matched column counts") {
    const auto d = fresh_dir("stsb");
    write(d + "/dev.tsv",
          "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
          "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\t"
          "A man wearing a hard hat is dancing.\t5.000\n"
          "1\tmain-captions\tMSRvid\t2012test\t0002\tnone\tnone\tA young child is riding a horse.\tA child is riding a "
          "horse.\t4.750\n");
    auto sts = data::read_glue_split(d, "STS-B", "dev");
    REQUIRE(sts.examples.size() == 2);
    CHECK(sts.info.regression);
    CHECK(sts.examples[0].text_a == "A man with a hard hat is dancing.");
    CHECK(sts.examples[1].score == Approx(4.75));

    const std::string tr_head =
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
        "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n";
    write(d + "/train.tsv",
          tr_head +
              "0\t31193\t31193n\tgovernment\t( ( Conceptually cream ) )\t( Product )\t(ROOT)\t(ROOT)\t"
              "Conceptually cream skimming has two basic dimensions.\tProduct and geography are "
              "what make cream skimming work. \tneutral\tneutral\n");
    auto mnli = data::read_glue_split(d, "MNLI", "train");
    REQUIRE(mnli.examples.size() == 1);
    CHECK(mnli.examples[0].text_a == "Conceptually cream skimming has two basic dimensions.");
    CHECK(mnli.examples[0].label == 2);  // contradiction, entailment, neutral
    const std::string dev_head =
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
        "sentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n";
    write(d + "/dev_matched.tsv", dev_head +
                                      "0\t63735\t63735n\tslate\t(a)\t(b)\t(A)\t(B)\tThe new rights are nice enough\t"
                                      "Everyone really likes the newest benefits \tneutral\tentailment\tneutral\t"
                                      "neutral\tneutral\tneutral\n"
                                      "1\t91383\t91383c\tgovernment\t(a)\t(b)\t(A)\t(B)\tThis site includes a list.\t"
                                      "The site has no list.\tcontradiction\tcontradiction\tcontradiction\t"
                                      "contradiction\tcontradiction\tcontradiction\n");
    auto dev = data::read_glue_split(d, "MNLI", "dev");  // "dev" means dev_matched for MNLI
    REQUIRE(dev.examples.size() == 2);
    CHECK(dev.file == d + "/dev_matched.tsv");
    CHECK(dev.examples[0].text_b == "Everyone really likes the newest benefits ");
    CHECK(dev.examples[0].label == 2);
    CHECK(dev.examples[1].label == 0);
}

TEST_CASE("glue: write_glue_tsv round trip for built-in layouts") {
    const auto d = fresh_dir("roundtrip");
    auto info = data::glue_task_info("WNGLOSS");
    std::vector<data::GlueExample> ex{
        {"a fledgling skier", "young and inexperienced", 1, 0},
        {"a fledgling skier", "(of a young bird) having acquired its flight feathers", 0, 0},
        {"caf\xC3\xA9 \"au lait\"", "coffee with milk", 1, 0}};
    data::write_glue_tsv(d + "/train.tsv", info, ex);
    auto back = data::read_glue_split(d, "WNGLOSS", "train");
    REQUIRE(back.examples.size() == ex.size());
    for (size_t i = 0; i < ex.size(); ++i) {
        CHECK(back.examples[i].text_a == ex[i].text_a);
        CHECK(back.examples[i].text_b == ex[i].text_b);
        CHECK(back.examples[i].label == ex[i].label);
    }
    // FORTUNE: data-dependent class names travel in labels.txt, so train and dev agree even
    // when dev lists the classes in another order.
    auto fi = data::glue_task_info("FORTUNE");
    fi.labels = {"computers", "food", "law"};
    data::write_glue_tsv(d + "/train.tsv", fi,
                         {{"Never trust a computer you can't throw.", "", 0, 0}, {"Eat dessert first.", "", 1, 0}});
    data::write_glue_tsv(d + "/dev.tsv", fi, {{"A lawyer's opinion.", "", 2, 0}, {"Bytes.", "", 0, 0}});
    auto fd = data::read_glue_split(d, "FORTUNE", "dev");
    CHECK(fd.info.labels == fi.labels);
    CHECK(fd.examples.at(0).label == 2);
    CHECK(fd.examples.at(1).label == 0);
    // a regression built-in layout (info with regression = true) writes and reads scores
    auto sts = data::glue_task_info("STS-B");
    std::vector<data::GlueExample> sx{{"a", "b", -1, 0.125}, {"c", "d", -1, 4.5}};
    CHECK_THROWS_WITH(data::write_glue_tsv(d + "/x.tsv", info, {{"tab\there", "x", 1, 0}}), Contains("tab or newline"));
    CHECK_THROWS_WITH(data::write_glue_tsv(d + "/x.tsv", info, {{"a", "b", 5, 0}}), Contains("label 5 outside [0, 2)"));
    sts.builtin = true;
    data::write_glue_tsv(d + "/sts.tsv", sts, sx);
    std::ifstream f(d + "/sts.tsv");
    std::string head;
    std::getline(f, head);
    CHECK(head == "sentence1\tsentence2\tscore");
}

TEST_CASE("glue: bad inputs are errors naming file and line") {
    const auto d = fresh_dir("bad");
    write(d + "/train.tsv", "sentence\tlabel\ngood movie\t1\nbad movie\t0\textra\n");
    CHECK_THROWS_WITH(data::read_glue_split(d, "SST-2", "train"),
                      Contains(d + "/train.tsv:3") && Contains("3 columns, expected 2"));
    const auto skipped = data::read_glue_split(d, "SST-2", "train", /*skip_malformed=*/true);
    CHECK(skipped.examples.size() == 1);
    CHECK(skipped.skipped == 1);
    write(d + "/train.tsv", "gj04\t1\tOur friends won't buy this analysis.\n");  // CoLA without its notes column
    CHECK_THROWS_WITH(data::read_glue_split(d, "CoLA", "train"), Contains("train.tsv:1: 3 columns, expected 4"));
    write(d + "/train.tsv", "sentence\tlabel\ngood movie\tpositive\n");
    CHECK_THROWS_WITH(data::read_glue_split(d, "SST-2", "train"),
                      Contains("train.tsv:2: unknown label 'positive'") && Contains("known: 0, 1"));
    write(d + "/dev.tsv",
          "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
          "0\tg\tf\ty\to\tn\tn\tA\tB\tfive\n");
    CHECK_THROWS_WITH(data::read_glue_split(d, "STS-B", "dev"), Contains("dev.tsv:2: bad score 'five'"));
    write(d + "/train.tsv", "sentence\tlabel\nfine\t1\nca\xFF\xFEt\t0\n");
    CHECK_THROWS_WITH(data::read_glue_split(d, "SST-2", "train"), Contains("train.tsv:3: invalid UTF-8"));
    write(d + "/train.tsv", "");
    CHECK_THROWS_WITH(data::read_glue_split(d, "SST-2", "train"), Contains("train.tsv' is empty"));
    write(d + "/train.tsv", "sentence\tlabel\n");
    CHECK_THROWS_WITH(data::read_glue_split(d, "SST-2", "train"), Contains("has no examples"));
    CHECK_THROWS_WITH(data::read_glue_split(d, "SST-2", "test_nope"),
                      Contains("cannot open") && Contains("test_nope.tsv"));
    CHECK_THROWS_WITH(data::read_glue_split(d, "SQuAD", "train"),
                      Contains("unknown task 'SQuAD'") && Contains("CoLA") && Contains("WNGLOSS"));
    CHECK_THROWS_WITH(data::glue_task_info("nope"), Contains("known: CoLA, SST-2, MRPC"));
    // issue 16: a directory where a split file or labels.txt is expected is named as such
    fs::create_directories(d + "/dev_matched.tsv");
    CHECK_THROWS_WITH(data::read_glue_split(d, "MNLI", "dev"), Contains(d + "/dev_matched.tsv") && Contains("is a directory"));
    write(d + "/train.tsv", "sentence\tlabel\nfine\tpoetry\n");
    fs::create_directories(d + "/labels.txt");
    CHECK_THROWS_WITH(data::read_glue_split(d, "FORTUNE", "train"), Contains(d + "/labels.txt': is a directory"));
}

// tokenizer_test.cpp — moekd/text/sentencepiece.hpp with the real SentencePiece library: joint
// unigram and BPE models trained on real text (French and Hindi human translations from the
// gettext catalogs installed on this machine, with a small built-in multi-script text as
// fallback), encode/decode round trips, fixed special ids, language-tag symbols, determinism,
// and clear errors for missing/corrupt models and bad training input.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "moekd/data/gettext.hpp"
#include "moekd/text/sentencepiece.hpp"

namespace fs = std::filesystem;
using namespace moekd::text;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        path = fs::temp_directory_path() / ("moekd_tokenizer_test_" + std::to_string(::getpid()));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() { fs::remove_all(path); }
};

// Up to `limit` cleaned translations (and their English sources) of one language.
std::vector<std::string> catalog_lines(const std::string& lang, size_t limit) {
    moekd::data::GettextCorpus corpus;
    const fs::path dir = fs::path("/usr/share/locale") / lang / "LC_MESSAGES";
    std::vector<std::string> files;
    if (fs::is_directory(dir))
        for (const auto& e : fs::directory_iterator(dir))
            if (e.path().extension() == ".mo") files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    for (const std::string& f : files) {
        try { corpus.add(moekd::data::read_mo(f)); } catch (const moekd::Error&) {}
    }
    std::vector<std::string> out;
    const auto& en = corpus.english(moekd::data::Split::train);
    const auto& tr = corpus.translation(moekd::data::Split::train);
    for (size_t i = 0; i < tr.size() && out.size() < limit; ++i) {
        out.push_back(tr[i]);
        out.push_back(en[i]);
    }
    return out;
}

const std::vector<std::string> kFallback = {
    "Open the file", "Ouvrir le fichier", "फ़ाइल खोलें", "Save the document as a new file",
    "Enregistrer le document dans un nouveau fichier", "दस्तावेज़ को नई फ़ाइल के रूप में सहेजें",
    "The printer is not connected", "L'imprimante n'est pas connectée", "प्रिंटर जुड़ा नहीं है",
    "Cannot read the configuration file", "Impossible de lire le fichier de configuration",
    "कॉन्फ़िगरेशन फ़ाइल पढ़ी नहीं जा सकती", "Show hidden files", "Afficher les fichiers cachés",
    "छिपी हुई फ़ाइलें दिखाएँ", "Permission denied", "Permission refusée", "अनुमति अस्वीकृत",
};

// Writes the training text once per test run; returns its path and lines.
const std::pair<std::string, std::vector<std::string>>& training_text(const TempDir& tmp) {
    static std::pair<std::string, std::vector<std::string>> cache;
    if (!cache.first.empty() && fs::exists(cache.first)) return cache;
    std::vector<std::string> lines = catalog_lines("fr", 1500);
    const std::vector<std::string> hi = catalog_lines("hi", 800);
    lines.insert(lines.end(), hi.begin(), hi.end());
    if (lines.size() < 200) {
        WARN("few gettext catalogs installed (" << lines.size() << " lines): using the built-in fallback text");
        for (int r = 0; r < 20; ++r) lines.insert(lines.end(), kFallback.begin(), kFallback.end());
    }
    cache.first = (tmp.path / "train.txt").string();
    std::ofstream f(cache.first);
    for (const auto& l : lines) f << l << '\n';
    cache.second = lines;
    return cache;
}

}  // namespace

TEST_CASE("unigram and BPE models: special ids, tags, round trip", "[tokenizer]") {
    TempDir tmp;
    const auto& [file, lines] = training_text(tmp);
    for (const std::string type : {"unigram", "bpe"}) {
        SECTION(type) {
            SentencePieceOptions opt;
            opt.vocab_size = 400;
            opt.model_type = type;
            opt.user_defined_symbols = {"<2fr>", "<2hi>", "<2en>"};
            const std::string model = train_sentencepiece({file}, (tmp.path / ("m_" + type)).string(), opt);
            REQUIRE(fs::exists(model));
            const SentencePiece sp = SentencePiece::load(model);
            CHECK(sp.vocab_size() > 7);
            CHECK(sp.vocab_size() <= 400);
            CHECK(sp.pad_id() == kSpPad);
            CHECK(sp.unk_id() == kSpUnk);
            CHECK(sp.bos_id() == kSpBos);
            CHECK(sp.eos_id() == kSpEos);
            CHECK(sp.piece_id("<2fr>") == 4);
            CHECK(sp.piece_id("<2hi>") == 5);
            CHECK(sp.piece_id("<2en>") == 6);
            CHECK(sp.piece_id("no-such-piece-xyz") == -1);
            const auto pieces = sp.encode_pieces("<2fr> Ouvrir");
            CHECK(std::find(pieces.begin(), pieces.end(), "<2fr>") != pieces.end());
            size_t exact = 0, total_ids = 0, total_chars = 0, out_of_range = 0;
            for (const std::string& l : lines) {
                const std::vector<int> ids = sp.encode(l);
                for (int id : ids) out_of_range += id < 0 || id >= sp.vocab_size();
                exact += sp.decode(ids) == l;
                total_ids += ids.size();
                total_chars += l.size();
            }
            CHECK(out_of_range == 0);
            CHECK(exact == lines.size());           // identity normalisation: lossless on clean text
            CHECK(total_ids < total_chars);         // subwords are longer than single bytes
            CHECK(sp.decode({}) == "");
            CHECK(sp.decode({kSpBos, kSpEos, kSpPad}) == "");
        }
    }
}

TEST_CASE("training is deterministic and a model survives save/load", "[tokenizer]") {
    TempDir tmp;
    const auto& [file, lines] = training_text(tmp);
    SentencePieceOptions opt;
    opt.vocab_size = 300;
    const SentencePiece a = SentencePiece::load(train_sentencepiece({file}, (tmp.path / "a").string(), opt));
    const SentencePiece b = SentencePiece::load(train_sentencepiece({file}, (tmp.path / "b").string(), opt));
    // (the serialized models differ only in the recorded trainer arguments: output paths)
    REQUIRE(a.vocab_size() == b.vocab_size());
    bool same = true;
    for (int id = 0; id < a.vocab_size(); ++id) same = same && a.id_to_piece(id) == b.id_to_piece(id);
    CHECK(same);
    a.save((tmp.path / "copy.model").string());
    const SentencePiece c = SentencePiece::load((tmp.path / "copy.model").string());
    const SentencePiece d = SentencePiece::from_serialized(a.serialized());
    for (size_t i = 0; i < lines.size(); i += 7) {
        CHECK(c.encode(lines[i]) == a.encode(lines[i]));
        CHECK(d.encode(lines[i]) == a.encode(lines[i]));
    }
}

TEST_CASE("missing, empty and corrupt models and bad ids are clear errors", "[tokenizer]") {
    TempDir tmp;
    const std::string missing = (tmp.path / "none.model").string();
    CHECK_THROWS_WITH(SentencePiece::load(missing), Catch::Contains("none.model") && Catch::Contains("does not exist"));
    const std::string empty = (tmp.path / "empty.model").string();
    std::ofstream(empty).close();
    CHECK_THROWS_WITH(SentencePiece::load(empty), Catch::Contains("empty.model") && Catch::Contains("is empty"));
    const std::string corrupt = (tmp.path / "corrupt.model").string();
    {
        std::ofstream f(corrupt, std::ios::binary);
        for (int i = 0; i < 4096; ++i) f.put(static_cast<char>((i * 7919 + 13) % 251));
    }
    CHECK_THROWS_WITH(SentencePiece::load(corrupt), Catch::Contains("corrupt.model") && Catch::Contains("not a valid"));
    const auto& [file, lines] = training_text(tmp);
    SentencePieceOptions opt;
    opt.vocab_size = 200;
    const SentencePiece sp = SentencePiece::load(train_sentencepiece({file}, (tmp.path / "m").string(), opt));
    CHECK_THROWS_WITH(sp.decode({5, sp.vocab_size()}), Catch::Contains("position 1") && Catch::Contains("outside the vocabulary"));
    CHECK_THROWS_WITH(sp.decode({-1}), Catch::Contains("outside the vocabulary"));
    CHECK_THROWS_WITH(SentencePiece().encode("x"), Catch::Contains("no model loaded"));
}

TEST_CASE("bad training input is a clear error", "[tokenizer]") {
    TempDir tmp;
    CHECK_THROWS_WITH(train_sentencepiece({}, (tmp.path / "m").string()), Catch::Contains("no training files"));
    CHECK_THROWS_WITH(train_sentencepiece({(tmp.path / "nope.txt").string()}, (tmp.path / "m").string()),
                      Catch::Contains("nope.txt") && Catch::Contains("does not exist"));
    const auto& [file, lines] = training_text(tmp);
    SentencePieceOptions opt;
    opt.vocab_size = 4;
    CHECK_THROWS_WITH(train_sentencepiece({file}, (tmp.path / "m").string(), opt), Catch::Contains("vocab_size 4"));
    opt.vocab_size = 100;
    CHECK_THROWS_WITH(train_sentencepiece({file}, (tmp.path / "no_dir" / "m").string(), opt),
                      Catch::Contains("no_dir") && Catch::Contains("does not exist"));
    opt.model_type = "nonsense";
    CHECK_THROWS_WITH(train_sentencepiece({file}, (tmp.path / "m").string(), opt), Catch::Contains("training on"));
}

// data_text_test.cpp — tests of the translation example's data layer: the .mo reader (on
// catalogs this test writes itself, both byte orders, corrupt ones too), every cleaning rule,
// strict UTF-8 validation, the deterministic split, and the WMT-style parallel reader's errors.
#include <catch2/catch.hpp>

#include <moekd/data/gettext.hpp>
#include <moekd/data/parallel.hpp>
#include <moekd/data/text.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <unistd.h>
#include <vector>

using namespace moekd::data;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using namespace std::string_literals;

namespace {

// Writes a .mo image: entries are (original, translation) with '\0' and '\x04' already joined.
std::string make_mo(const std::vector<std::pair<std::string, std::string>>& entries, bool big_endian) {
    std::string b;
    auto put = [&](uint32_t v) {
        for (int k = 0; k < 4; ++k) b.push_back(char(big_endian ? (v >> (24 - 8 * k)) & 0xFF : (v >> (8 * k)) & 0xFF));
    };
    const uint32_t n = uint32_t(entries.size());
    const uint32_t orig = 28, trans = orig + 8 * n, strings = trans + 8 * n;
    put(0x950412deU); put(0); put(n); put(orig); put(trans); put(0); put(strings);
    std::string pool;
    std::vector<uint32_t> ol, oo, tl, to;
    for (const auto& [o, t] : entries) { ol.push_back(uint32_t(o.size())); oo.push_back(strings + uint32_t(pool.size())); pool += o; pool.push_back('\0'); }
    for (const auto& [o, t] : entries) { tl.push_back(uint32_t(t.size())); to.push_back(strings + uint32_t(pool.size())); pool += t; pool.push_back('\0'); }
    for (uint32_t i = 0; i < n; ++i) { put(ol[i]); put(oo[i]); }
    for (uint32_t i = 0; i < n; ++i) { put(tl[i]); put(to[i]); }
    return b + pool;
}

const std::vector<std::pair<std::string, std::string>> kEntries = {
    {"", "Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=2; plural=(n > 1);\n"},
    {"Hello", "Bonjour"},
    {"menu\x04" "File", "Fichier"},
    {"%d file\0%d files"s, "%d fichier\0%d fichiers"s},
};

struct TempDir {
    fs::path path;
    TempDir() {
        static int counter = 0;
        path = fs::temp_directory_path() / ("moekd_data_text_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
        fs::create_directories(path);
    }
    ~TempDir() { std::error_code ec; fs::remove_all(path, ec); }
    std::string write(const std::string& rel, const std::string& content) const {
        const fs::path p = path / rel;
        fs::create_directories(p.parent_path());
        std::ofstream(p, std::ios::binary) << content;
        return p.string();
    }
};

void set_u32(std::string& b, size_t at, uint32_t v) {  // little-endian patch
    for (int k = 0; k < 4; ++k) b[at + k] = char((v >> (8 * k)) & 0xFF);
}

}  // namespace

TEST_CASE("mo reader reads both byte orders, plurals, contexts, and skips the header", "[gettext]") {
    for (bool big : {false, true}) {
        const MoCatalog c = parse_mo(make_mo(kEntries, big), "t.mo");
        CHECK_THAT(c.header, Contains("charset=UTF-8"));
        REQUIRE(c.entries.size() == 3);
        CHECK(c.entries[0].msgid == "Hello");
        CHECK(c.entries[0].context.empty());
        CHECK(c.entries[0].translations == std::vector<std::string>{"Bonjour"});
        CHECK(c.entries[1].context == "menu");
        CHECK(c.entries[1].msgid == "File");
        CHECK(c.entries[2].msgid == "%d file");
        CHECK(c.entries[2].msgid_plural == "%d files");
        CHECK(c.entries[2].translations == std::vector<std::string>{"%d fichier", "%d fichiers"});
        CHECK(mo_charset(c.header) == "utf-8");
    }
    TempDir d;
    const std::string p = d.write("fr/LC_MESSAGES/x.mo", make_mo(kEntries, false));
    CHECK(read_mo(p).entries.size() == 3);
    CHECK(mo_language(p) == "fr");
    CHECK(mo_language("/usr/share/locale/fr_CA/LC_MESSAGES/x.mo") == "fr_CA");
    CHECK(mo_language("/usr/share/x.mo").empty());
    CHECK_THROWS_WITH(read_mo((d.path / "nope.mo").string()), Contains("cannot open") && Contains("nope.mo"));
}

TEST_CASE("mo reader rejects corrupt catalogs with the file and entry named", "[gettext]") {
    const std::string good = make_mo(kEntries, false);
    CHECK_THROWS_WITH(parse_mo("short", "a.mo"), Contains("a.mo") && Contains("too short"));
    std::string bad = good;
    bad[0] = 'X';
    CHECK_THROWS_WITH(parse_mo(bad, "a.mo"), Contains("bad magic"));
    bad = good;
    set_u32(bad, 4, 7u << 16);
    CHECK_THROWS_WITH(parse_mo(bad, "a.mo"), Contains("major revision 7"));
    bad = good;
    set_u32(bad, 8, 0x10000000u);  // N far too large
    CHECK_THROWS_WITH(parse_mo(bad, "a.mo"), Contains("originals table") && Contains("past the end"));
    bad = good;
    set_u32(bad, 28 + 8 * 1 + 4, 0xFFFFFFF0u);  // entry 1's original offset
    CHECK_THROWS_WITH(parse_mo(bad, "b.mo"), Contains("b.mo") && Contains("entry 1 ") && Contains("original"));
    bad = good;
    set_u32(bad, 28 + 8 * 4 + 8 * 2, 0x7FFFFFFFu);  // entry 2's translation length
    CHECK_THROWS_WITH(parse_mo(bad, "c.mo"), Contains("entry 2 ") && Contains("translation"));
    // Every truncation and every single-byte corruption parses or throws moekd::Error.
    for (size_t len = 0; len < good.size(); ++len) {
        try { (void)parse_mo(std::string_view(good).substr(0, len), "t.mo"); } catch (const moekd::Error&) {}
    }
    for (size_t at = 0; at < 28 + 8 * 8; ++at) {
        std::string x = good;
        x[at] = char(0xFF);
        try { (void)parse_mo(x, "t.mo"); } catch (const moekd::Error&) {}
    }
}

// A revision-1 catalog with one system-dependent entry "%<PRIuMAX> bytes" -> "%<PRIuMAX> octets".
std::string make_sysdep_mo(uint32_t ref = 0) {
    std::string b;
    auto put = [&](uint32_t v) { for (int k = 0; k < 4; ++k) b.push_back(char((v >> (8 * k)) & 0xFF)); };
    put(0x950412deU); put(1); put(0); put(48); put(48); put(0); put(48);  // no regular entries
    put(1); put(48); put(1); put(56); put(60);                            // 1 segment, 1 sysdep string
    put(7); put(104);                                                      // segment name "PRIuMAX"
    put(64);                                                               // original descriptor
    put(84);                                                               // translation descriptor
    put(112); put(1); put(ref); put(7); put(0xFFFFFFFFu);                  // "%" <seg> " bytes\0"
    put(120); put(1); put(ref); put(8); put(0xFFFFFFFFu);                  // "%" <seg> " octets\0"
    b += "PRIuMAX"s + '\0' + "% bytes"s + '\0' + "% octets"s + '\0';
    return b;
}

TEST_CASE("mo reader expands system-dependent strings and checks their bounds", "[gettext]") {
    const MoCatalog c = parse_mo(make_sysdep_mo(), "s.mo");
    REQUIRE(c.entries.size() == 1);
    CHECK(c.entries[0].msgid == "%<PRIuMAX> bytes");
    CHECK(c.entries[0].translations == std::vector<std::string>{"%<PRIuMAX> octets"});
    CHECK_THROWS_WITH(parse_mo(make_sysdep_mo(5), "s.mo"),
                      Contains("s.mo") && Contains("system-dependent entry 0") && Contains("does not exist"));
    std::string bad = make_sysdep_mo();
    set_u32(bad, 56, 0xFFFFFF00u);
    CHECK_THROWS_WITH(parse_mo(bad, "s.mo"), Contains("system-dependent entry 0 (original)"));
    bad = make_sysdep_mo();
    set_u32(bad, 36, 0x40000000u);
    CHECK_THROWS_WITH(parse_mo(bad, "s.mo"), Contains("system-dependent string tables"));
    const std::string good = make_sysdep_mo();
    for (size_t len = 0; len < good.size(); ++len) {
        try { (void)parse_mo(std::string_view(good).substr(0, len), "t.mo"); } catch (const moekd::Error&) {}
    }
    for (size_t at = 0; at < good.size(); ++at) {
        std::string x = good;
        x[at] = char(0xF0);
        try { (void)parse_mo(x, "t.mo"); } catch (const moekd::Error&) {}
    }
}

TEST_CASE("strict UTF-8 validation", "[text]") {
    CHECK(is_valid_utf8(""));
    CHECK(is_valid_utf8("plain ASCII"));
    CHECK(is_valid_utf8("Größe – हिन्दी – ગુજરાતી – 𝄞"));
    auto at = [](std::string_view s) { const Utf8Check c = check_utf8(s); return c.ok ? -1 : int(c.offset); };
    auto why = [](std::string_view s) { return std::string(check_utf8(s).reason); };
    CHECK(at("ab\xC0\x80") == 2);  // overlong NUL
    CHECK(why("ab\xC0\x80") == "overlong encoding");
    CHECK(why("\xE0\x80\x80") == "overlong encoding");
    CHECK(why("\xF0\x80\x80\x80") == "overlong encoding");
    CHECK(why("\xED\xA0\x80") == "surrogate code point");  // U+D800
    CHECK(why("\xED\xBF\xBF") == "surrogate code point");  // U+DFFF
    CHECK(is_valid_utf8("\xED\x9F\xBF"));                  // U+D7FF
    CHECK(why("\xF4\x90\x80\x80") == "code point above U+10FFFF");
    CHECK(is_valid_utf8("\xF4\x8F\xBF\xBF"));              // U+10FFFF
    CHECK(at("\xF5\x80\x80\x80") == 0);
    CHECK(why("x\x80") == "unexpected continuation byte");
    CHECK(at("abc\xE2\x82") == 3);
    CHECK(why("abc\xE2\x82") == "truncated sequence");
    CHECK(why("\xE2\x82" "A") == "truncated sequence");
    CHECK(why("\xFF") != "");
}

TEST_CASE("whitespace, control characters, placeholders", "[text]") {
    CHECK(collapse_whitespace("  two\n\tlines \r\n here ") == "two lines here");
    CHECK(collapse_whitespace(" \n ").empty());
    CHECK(collapse_whitespace("a\xC2\xA0:") == "a\xC2\xA0:");  // no-break space kept
    CHECK(has_control_chars("bell\x07"));
    CHECK(has_control_chars("\x1b[1m"));
    CHECK_FALSE(has_control_chars("tab\tnewline\n"));
    for (const char* s : {"%s", "%d: %s", "%1$s %2$s", "%-10.3lf", "%(name)s", "%<PRIu64>", "{0} - {1}", "${var}",
                          "...", "—", "100%%", "%s (%s)", "‘%s’", "«%s»"})
        CHECK_FALSE(has_letters(s));
    for (const char* s : {"%s files", "Größe", "फ़ाइल", "{name} is set", "x"}) CHECK(has_letters(s));
}

TEST_CASE("UI accelerator markers are stripped, literal uses kept", "[text]") {
    auto strip = [](std::string en, std::string tr) {
        strip_accelerators(en, tr);
        return en + "|" + tr;
    };
    CHECK(strip("_File", "_Fichier") == "File|Fichier");
    CHECK(strip("Save _As…", "Enregistrer _sous…") == "Save As…|Enregistrer sous…");
    CHECK(strip("Pre_ferences", "Pré_férences") == "Preferences|Préférences");
    CHECK(strip("_File", "ファイル(_F)") == "File|ファイル");
    CHECK(strip("_Open…", "खोलें (_O)…") == "Open…|खोलें…");
    CHECK(strip("&Open", "&Ouvrir") == "Open|Ouvrir");
    CHECK(strip("_Edit", "Muokkaa") == "Edit|Muokkaa");  // translator dropped the mnemonic
    // literal cases
    CHECK(strip("set file_name", "définir file_name") == "set file_name|définir file_name");
    CHECK(strip("LC_ALL is set", "LC_ALL est défini") == "LC_ALL is set|LC_ALL est défini");
    CHECK(strip("a && b", "a && b ok") == "a && b|a && b ok");
    CHECK(strip("Tom &amp; Jerry", "Tom &amp; Jerry fr") == "Tom &amp; Jerry|Tom &amp; Jerry fr");
    CHECK(strip("AT&T", "AT&T fr") == "AT&T|AT&T fr");
    CHECK(strip("__init__", "__init__ fr") == "__init__|__init__ fr");
    CHECK(strip("_a _b", "_x _y") == "_a _b|_x _y");  // two candidates: ambiguous, left alone
    CHECK(strip_paren_accelerators("Datei (_D)...") == "Datei...");
}

TEST_CASE("clean_pair applies every rule", "[text]") {
    auto run = [](std::string en, std::string tr, size_t max = 0) {
        const Drop d = clean_pair(en, tr, max);
        return std::string(drop_name(d)) + ":" + en + "|" + tr;
    };
    CHECK(run("_Open\nfile", " _Ouvrir  un fichier ") == "kept:Open file|Ouvrir un fichier");
    CHECK(run("Hello", "") == "untranslated:Hello|");
    CHECK(run("Hello", "Bad\xC0\x80") .rfind("invalid_utf8", 0) == 0);
    CHECK(run("Bad\xED\xA0\x80", "ok").rfind("invalid_utf8", 0) == 0);
    CHECK(run("\x1b[1mbold", "\x1b[1mgras").rfind("control", 0) == 0);
    CHECK(run("  \n", "x").rfind("empty", 0) == 0);
    CHECK(run("OK", "OK").rfind("identical", 0) == 0);
    CHECK(run("_OK", "_OK").rfind("identical", 0) == 0);
    CHECK(run("%s: %s", "%s : %s").rfind("placeholder", 0) == 0);
    CHECK(run("%d", "%d.").rfind("placeholder", 0) == 0);
    CHECK(run("Name: %s", "%s").rfind("placeholder", 0) == 0);
    CHECK(run("a long one", "un long", 5).rfind("too_long", 0) == 0);
    CHECK(run("a long one", "un long", 50).rfind("kept", 0) == 0);
}

TEST_CASE("GettextCorpus: singular of plurals, contexts dropped, de-duplication, charset", "[gettext]") {
    GettextCorpus c(GettextCorpus::Options{0.0, 0.0, 0});  // everything in train
    c.add(parse_mo(make_mo(kEntries, false), "a.mo"));
    // a second package with a duplicate pair, the same English with another translation, and
    // a pair that only differs by its accelerator (a duplicate once cleaned).
    c.add(parse_mo(make_mo({{"", "charset=UTF-8"}, {"Hello", "Bonjour"}, {"Hello", "Salut"}, {"_Hello", "_Bonjour"}},
                           true), "b.mo"));
    CHECK(c.catalogs() == 2);
    CHECK(c.entries() == 6);
    CHECK(c.count(Drop::duplicate) == 2);
    CHECK(c.english(Split::train) == std::vector<std::string>{"Hello", "File", "%d file", "Hello"});
    CHECK(c.translation(Split::train) == std::vector<std::string>{"Bonjour", "Fichier", "%d fichier", "Salut"});
    CHECK(c.count(Drop::none) == 4);
    CHECK(c.english(Split::valid).empty());
    c.add(parse_mo(make_mo({{"", "Content-Type: text/plain; charset=ISO-8859-1\n"}, {"Size", "Gr\xF6\xDF" "e"}}, false),
                   "latin1.mo"));
    CHECK(c.count(Drop::invalid_utf8) == 0);  // converted with iconv
    CHECK(c.english(Split::train).back() == "Size");
    CHECK(c.translation(Split::train).back() == "Größe");
    c.add(parse_mo(make_mo({{"", "Content-Type: text/plain; charset=x-no-such-charset\n"}, {"Big", "Gro\xDF"}}, false),
                   "bogus.mo"));
    CHECK(c.count(Drop::invalid_utf8) == 1);
    CHECK(c.english(Split::train).size() == 5);
    std::string out;
    CHECK_FALSE(convert_to_utf8("\xFF\xFE", "utf-8", out));
    MoEntry untranslated{"", "Quit", "", {""}};
    CHECK(c.add(untranslated) == Drop::untranslated);
    CHECK(c.translated() == c.entries() - 1);
}

TEST_CASE("the split is deterministic, near its fractions, and never splits a sentence", "[text]") {
    CHECK(fnv1a64("") == 0xcbf29ce484222325ULL);
    CHECK(fnv1a64("a") == 0xaf63dc4c8601ec8cULL);  // FNV-1a 64 reference value
    CHECK(split_key("_Open…: now") == "opennow");
    CHECK(split_key("Größe «x»") == "größex");
    int count[3] = {0, 0, 0};
    for (int i = 0; i < 20000; ++i) {
        const std::string s = "sentence number " + std::to_string(i);
        const Split a = split_of(s, 0.05, 0.05);
        CHECK(split_of(s, 0.05, 0.05) == a);
        CHECK(split_of("Sentence Number " + std::to_string(i) + ".", 0.05, 0.05) == a);  // same key
        ++count[int(a)];
    }
    CHECK(count[1] > 800);
    CHECK(count[1] < 1200);
    CHECK(count[2] > 800);
    CHECK(count[2] < 1200);
    CHECK_THROWS_WITH(split_of("x", 0.6, 0.5), Contains("split_of") && Contains("sum to less than 1"));
    CHECK_THROWS_AS(split_of("x", -0.1, 0.0), moekd::Error);

    // Through the corpus builder: many translations of the same English, with case and
    // punctuation variants, all land in one split; two runs give the same files.
    auto build = [] {
        GettextCorpus c(GettextCorpus::Options{0.2, 0.2, 0});
        for (int i = 0; i < 300; ++i)
            for (int v = 0; v < 3; ++v) {
                std::string en = "Item " + std::to_string(i);
                if (v == 1) en = "_item " + std::to_string(i) + "…";
                if (v == 2) en += ":";
                c.add(MoEntry{"", en, "", {"Objet " + std::to_string(i) + " v" + std::to_string(v)}});
            }
        return c;
    };
    const GettextCorpus a = build(), b = build();
    std::map<std::string, int> where;
    for (Split s : {Split::train, Split::valid, Split::test}) {
        CHECK(a.english(s) == b.english(s));
        CHECK(a.translation(s) == b.translation(s));
        CHECK_FALSE(a.english(s).empty());
        for (const std::string& en : a.english(s)) {
            const auto it = where.emplace(split_key(en), int(s)).first;
            CHECK(it->second == int(s));
        }
    }
    CHECK(where.size() == 300);
}

TEST_CASE("parallel reader: both directions, empty pairs skipped, CRLF and BOM", "[parallel]") {
    TempDir d;
    for (const char* split : {"train", "valid", "test"}) {
        d.write("fr-en/"s + split + ".fr", "\xEF\xBB\xBF" "Bonjour\r\n\nMerci  beaucoup\r\nOui\n");
        d.write("fr-en/"s + split + ".en", "Hello\r\nEmpty\nThank   you\r\n\n");
    }
    fs::create_directories(d.path / "not_a_pair");
    const ParallelCorpus c = read_parallel_corpus(d.path.string(), "fr", "en");
    CHECK(c.src_lang == "fr");
    CHECK(c.train.src == std::vector<std::string>{"Bonjour", "Merci beaucoup"});
    CHECK(c.train.tgt == std::vector<std::string>{"Hello", "Thank you"});
    CHECK(c.train.skipped_empty == 2);
    CHECK(c.test.size() == 2);
    const ParallelCorpus r = read_parallel_corpus(d.path.string(), "en", "fr");
    CHECK(r.valid.src == std::vector<std::string>{"Hello", "Thank you"});
    CHECK(r.valid.tgt == std::vector<std::string>{"Bonjour", "Merci beaucoup"});
    CHECK(list_language_pairs(d.path.string()) == std::vector<std::pair<std::string, std::string>>{{"fr", "en"}});
    CHECK(valid_language_code("pt_BR"));
    CHECK_FALSE(valid_language_code("french"));
    CHECK_FALSE(valid_language_code("FR"));
}

TEST_CASE("parallel reader errors name files, lines and counts", "[parallel]") {
    TempDir d;
    const std::string dir = d.path.string();
    d.write("de-en/train.de", "a\nb\nc\n");
    d.write("de-en/train.en", "a\nb\n");
    CHECK_THROWS_WITH(read_parallel_corpus(dir, "de", "en"),
                      Contains("misaligned") && Contains("train.de' has 3 lines") && Contains("train.en' has 2") &&
                          Contains("line 3 of"));
    d.write("de-en/train.en", "a\nb\nc");  // no final newline: still 3 lines
    CHECK_THROWS_WITH(read_parallel_corpus(dir, "de", "en"), Contains("missing file") && Contains("valid.de"));
    CHECK(read_parallel_corpus(dir, "de", "en", /*need_eval=*/false).train.size() == 3);
    d.write("de-en/train.en", "a\nok \xE2\x82\n c\n");
    CHECK_THROWS_WITH(read_parallel_corpus(dir, "de", "en", false),
                      Contains("train.en' line 2") && Contains("invalid UTF-8") && Contains("truncated") &&
                          Contains("byte offset 5 of the file") && Contains("byte 4 of the line"));
    d.write("de-en/train.en", "\n \n\n");
    d.write("de-en/train.de", "x\n\ny\n");
    CHECK_THROWS_WITH(read_parallel_corpus(dir, "de", "en", false), Contains("empty corpus"));
    CHECK_THROWS_WITH(read_parallel_corpus(dir, "xx", "en"), Contains("no directory 'xx-en'") && Contains("de-en"));
    CHECK_THROWS_WITH(read_parallel_corpus(dir, "German", "en"), Contains("not a language code"));
    CHECK_THROWS_WITH(read_parallel_corpus(dir, "en", "en"), Contains("both 'en'"));
    CHECK_THROWS_WITH(read_parallel_corpus(dir + "/nope", "de", "en"), Contains("does not exist"));
}

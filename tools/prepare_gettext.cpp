// prepare_gettext — builds the translation example's default corpus from extracted .mo catalogs.
//
// Run by scripts/build_gettext_corpus.sh after it has unpacked the Debian packages of DATA.md:
//   prepare_gettext --root ROOT --out OUT [--langs cs,de,...] [--valid 0.01] [--test 0.01]
//                   [--max-bytes N]
// Finds every ROOT/**/<lang>/LC_MESSAGES/<domain>.mo of the chosen languages (exact codes only:
// "fr_CA", "de_CH" and the like are skipped and counted, not merged into "fr"/"de"), cleans and
// de-duplicates per language (symlinked catalogs are aliases: skipped) (moekd::data::GettextCorpus), and writes
// OUT/<lang>-en/{train,valid,test}.{<lang>,en} plus OUT/stats.json; the stats table goes to
// stdout. Catalogs are read in sorted path order, so the output is the same on every run.
// Every output is written with io::write_text_atomic (each write, the fsync and the close
// checked; a symlink is followed, a FIFO or device node refused): a full disk is an error naming
// the file, exit status 1. Bad flag values (--max-bytes abc) are errors naming the flag.
#include <moekd/data/gettext.hpp>
#include <moekd/io/atomic_file.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace moekd::data;

namespace {

[[noreturn]] void usage(const std::string& why) {
    std::cerr << "prepare_gettext: " << why << "\n"
              << "usage: prepare_gettext --root DIR --out DIR [--langs cs,de,et,fi,fr,gu,hi,lv,ro,tr]\n"
              << "                       [--valid 0.01] [--test 0.01] [--max-bytes 0]\n";
    std::exit(2);
}

double parse_fraction(const std::string& flag, const std::string& v) {
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !(x >= 0 && x < 1)) usage(flag + " wants a fraction in [0, 1), got '" + v + "'");
    return x;
}

void write_lines(const fs::path& p, const std::vector<std::string>& lines) {
    std::string text;
    for (const std::string& l : lines) text += l + '\n';
    moekd::io::write_text_atomic(p.string(), text);
}

unsigned long long parse_count(const std::string& flag, const std::string& v) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
    if (v.empty() || v[0] == '-' || *end != '\0' || errno == ERANGE)
        usage(flag + " wants a non-negative integer, got '" + v + "'");
    return x;
}

}  // namespace

int main(int argc, char** argv) {
    std::string root, out;
    std::vector<std::string> langs = {"cs", "de", "et", "fi", "fr", "gu", "hi", "lv", "ro", "tr"};
    GettextCorpus::Options opt;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(a + " needs a value");
            return argv[++i];
        };
        if (a == "--root") root = value();
        else if (a == "--out") out = value();
        else if (a == "--valid") opt.valid_frac = parse_fraction(a, value());
        else if (a == "--test") opt.test_frac = parse_fraction(a, value());
        else if (a == "--max-bytes") opt.max_bytes = parse_count(a, value());
        else if (a == "--langs") {
            langs.clear();
            std::stringstream ss(value());
            for (std::string l; std::getline(ss, l, ',');)
                if (!l.empty()) langs.push_back(l);
        } else if (a == "-h" || a == "--help") usage("help");
        else usage("unknown argument '" + a + "'");
    }
    if (root.empty() || out.empty()) usage("--root and --out are required");
    if (opt.valid_frac + opt.test_frac >= 1) usage("--valid + --test must be below 1");
    for (const std::string& l : langs)
        if (l.size() < 2 || l.size() > 3 || !std::all_of(l.begin(), l.end(), [](char c) { return c >= 'a' && c <= 'z'; }))
            usage("unknown language code '" + l + "' (want e.g. fr, de, gu)");
    if (!fs::is_directory(root)) usage("--root '" + root + "' is not a directory");

    try {
        // Collect catalogs, sorted, per language.
        std::map<std::string, std::vector<std::string>> files;
        std::map<std::string, int64_t> variants;  // skipped regional catalogs, by base language
        int64_t symlinks = 0;                      // skipped symlinked catalogs (all languages)
        for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied);
             it != fs::recursive_directory_iterator(); ++it) {
            if (it->path().extension() != ".mo") continue;
            // Symlinked catalogs (iso-codes' iso_3166_2.mo -> iso_3166-2.mo) are aliases of a file
            // that is read anyway, and an absolute link would read this machine's own files.
            if (it->is_symlink()) { ++symlinks; continue; }
            if (!it->is_regular_file()) continue;
            const std::string p = it->path().string();
            const std::string lang = mo_language(p);
            if (std::find(langs.begin(), langs.end(), lang) != langs.end()) {
                files[lang].push_back(p);
                continue;
            }
            const std::string base = lang.substr(0, lang.find_first_of("_@."));
            if (std::find(langs.begin(), langs.end(), base) != langs.end()) ++variants[base];
        }
        fs::create_directories(out);
        std::ostringstream json;
        json << "{\n  \"valid_fraction\": " << opt.valid_frac << ",\n  \"test_fraction\": " << opt.test_frac
             << ",\n  \"max_bytes\": " << opt.max_bytes << ",\n  \"languages\": {";
        std::printf("%-4s %5s %8s %8s | %7s %6s %6s | %7s %7s %6s %6s %6s %6s %7s %9s\n", "lang", "cats", "entries",
                    "transl", "train", "valid", "test", "untrans", "badutf8", "ctrl", "empty", "ident", "placeh",
                    "toolong", "duplicate");
        int64_t total[3] = {0, 0, 0};
        bool first = true;
        for (const std::string& lang : langs) {
            std::vector<std::string>& fl = files[lang];
            std::sort(fl.begin(), fl.end());
            GettextCorpus corpus(opt);
            for (const std::string& f : fl) corpus.add(read_mo(f));
            const fs::path dir = fs::path(out) / (lang + "-en");
            fs::create_directories(dir);
            for (Split s : {Split::train, Split::valid, Split::test}) {
                write_lines(dir / (std::string(split_name(s)) + "." + lang), corpus.translation(s));
                write_lines(dir / (std::string(split_name(s)) + ".en"), corpus.english(s));
                total[static_cast<int>(s)] += corpus.english(s).size();
            }
            const size_t n[3] = {corpus.english(Split::train).size(), corpus.english(Split::valid).size(),
                                 corpus.english(Split::test).size()};
            std::printf("%-4s %5lld %8lld %8lld | %7zu %6zu %6zu | %7lld %7lld %6lld %6lld %6lld %6lld %7lld %9lld\n",
                        lang.c_str(), (long long)corpus.catalogs(), (long long)corpus.entries(),
                        (long long)corpus.translated(), n[0], n[1], n[2], (long long)corpus.count(Drop::untranslated),
                        (long long)corpus.count(Drop::invalid_utf8), (long long)corpus.count(Drop::control),
                        (long long)corpus.count(Drop::empty), (long long)corpus.count(Drop::identical),
                        (long long)corpus.count(Drop::placeholder), (long long)corpus.count(Drop::too_long),
                        (long long)corpus.count(Drop::duplicate));
            json << (first ? "" : ",") << "\n    \"" << lang << "\": {\"catalogs\": " << corpus.catalogs()
                 << ", \"skipped_variant_catalogs\": " << variants[lang] << ", \"entries\": " << corpus.entries()
                 << ", \"translated\": " << corpus.translated() << ", \"train\": " << n[0] << ", \"valid\": " << n[1]
                 << ", \"test\": " << n[2] << ", \"dropped\": {";
            for (int d = 1; d < kDropReasons; ++d)
                json << (d > 1 ? ", " : "") << "\"" << drop_name(static_cast<Drop>(d)) << "\": "
                     << corpus.count(static_cast<Drop>(d));
            json << "}}";
            first = false;
            if (corpus.english(Split::train).empty())
                std::fprintf(stderr, "prepare_gettext: warning: no training pairs for '%s' (%zu catalogs)\n",
                             lang.c_str(), fl.size());
        }
        json << "\n  },\n  \"skipped_symlinked_catalogs\": " << symlinks << ",\n  \"total\": {\"train\": " << total[0] << ", \"valid\": " << total[1]
             << ", \"test\": " << total[2] << "}\n}\n";
        std::printf("total: train %lld, valid %lld, test %lld pairs\n", (long long)total[0], (long long)total[1],
                    (long long)total[2]);
        int64_t skipped = 0;
        for (const auto& [l, c] : variants) skipped += c;
        std::printf("skipped %lld symlinked catalogs (aliases of catalogs read)\n", (long long)symlinks);
        if (skipped > 0) {
            std::printf("skipped regional-variant catalogs (exact codes only):");
            for (const auto& [l, c] : variants) std::printf(" %s:%lld", l.c_str(), (long long)c);
            std::printf("\n");
        }
        moekd::io::write_text_atomic((fs::path(out) / "stats.json").string(), json.str());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "prepare_gettext: %s\n", e.what());
        return 1;
    }
    return 0;
}

// gettext.hpp — reader for GNU gettext .mo catalogs and the corpus builder on top of it.
//
// A source of real parallel text on any Debian machine (../shared/DATA.md): the human translations
// in Debian's .mo catalogs (the translation example's built-in data). Format (GNU gettext manual, "MO Files"): uint32 magic 0x950412de in
// the file's byte order (so little- or big-endian), revision, N, offset O of the originals
// table, offset T of the translations table (hash table fields ignored); each table holds N
// (length, offset) pairs of uint32. An original is "msgid" or "msgid\0msgid_plural", prefixed
// with "context\x04" when it has a context; a translation is msgstr or the plural msgstr[i]
// joined by '\0'. Entry 0 with the empty msgid is the header (Content-Type, Plural-Forms).
// Every offset and length is bounds-checked: a corrupt catalog is a moekd::Error naming the
// file and the entry, never an out-of-bounds read.
// Note: .mo files carry no fuzzy entries (msgfmt drops them unless --use-fuzzy), so "drop fuzzy"
// is done by the catalogs' build already. Revision-1 system-dependent strings ("%<PRIuMAX>",
// used by coreutils, tar, gettext...) are read too, their placeholders spelt as in the .po.
#pragma once

#include <iconv.h>

#include <array>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "../core/error.hpp"
#include "../io/read_file.hpp"
#include "text.hpp"

namespace moekd::data {

/// One catalog entry. translations holds one string, or one per plural form (msgstr[i]).
struct MoEntry {
    std::string context;
    std::string msgid;
    std::string msgid_plural;
    std::vector<std::string> translations;
};

/// A parsed catalog: its header (the msgstr of the empty msgid) and the other entries.
struct MoCatalog {
    std::string header;
    std::vector<MoEntry> entries;
};

namespace detail {
inline std::vector<std::string> split_nul(std::string_view s) {
    std::vector<std::string> parts;
    size_t a = 0;
    for (;;) {
        const size_t z = s.find('\0', a);
        parts.emplace_back(s.substr(a, z == std::string_view::npos ? std::string_view::npos : z - a));
        if (z == std::string_view::npos) break;
        a = z + 1;
    }
    return parts;
}
}  // namespace detail

/// Parses the bytes of a .mo file; `name` is used in error messages.
inline MoCatalog parse_mo(std::string_view b, const std::string& name) {
    MOEKD_CHECK(b.size() >= 20, "gettext: '", name, "' is too short for a .mo header (", b.size(), " bytes)");
    const auto* p = reinterpret_cast<const unsigned char*>(b.data());
    auto le = [&](size_t at) { return uint32_t(p[at]) | uint32_t(p[at + 1]) << 8 | uint32_t(p[at + 2]) << 16 | uint32_t(p[at + 3]) << 24; };
    auto be = [&](size_t at) { return uint32_t(p[at]) << 24 | uint32_t(p[at + 1]) << 16 | uint32_t(p[at + 2]) << 8 | uint32_t(p[at + 3]); };
    bool big = false;
    if (le(0) == 0x950412deU) big = false;
    else if (be(0) == 0x950412deU) big = true;
    else MOEKD_CHECK(false, "gettext: '", name, "' has a bad magic number (not a .mo file)");
    auto u32 = [&](size_t at) { return big ? be(at) : le(at); };
    const uint32_t revision = u32(4);
    MOEKD_CHECK((revision >> 16) <= 1, "gettext: '", name, "' has major revision ", revision >> 16,
                " (only 0 and 1 are known)");
    const uint64_t n = u32(8), orig = u32(12), trans = u32(16);
    const uint64_t size = b.size();
    MOEKD_CHECK(orig + 8 * n <= size, "gettext: '", name, "' declares ", n, " entries but its originals table at offset ",
                orig, " runs past the end of the file (", size, " bytes)");
    MOEKD_CHECK(trans + 8 * n <= size, "gettext: '", name, "' declares ", n,
                " entries but its translations table at offset ", trans, " runs past the end of the file (", size,
                " bytes)");
    auto string_at = [&](uint64_t table, uint64_t i, const char* which) {
        const uint64_t len = u32(table + 8 * i), off = u32(table + 8 * i + 4);
        MOEKD_CHECK(off + len <= size, "gettext: '", name, "' is corrupt: entry ", i, " has its ", which,
                    " at offset ", off, " with length ", len, ", past the end of the file (", size, " bytes)");
        return b.substr(off, len);
    };
    MoCatalog cat;
    cat.entries.reserve(n);
    auto add_entry = [&](std::string_view o, std::string_view t) {
        if (o.empty()) {  // the header entry
            cat.header = std::string(t);
            return;
        }
        MoEntry e;
        if (const size_t x = o.find('\x04'); x != std::string_view::npos) {
            e.context = std::string(o.substr(0, x));
            o = o.substr(x + 1);
        }
        if (const size_t z = o.find('\0'); z != std::string_view::npos) {
            e.msgid = std::string(o.substr(0, z));
            e.msgid_plural = std::string(o.substr(z + 1));
        } else {
            e.msgid = std::string(o);
        }
        e.translations = detail::split_nul(t);
        cat.entries.push_back(std::move(e));
    };
    for (uint64_t i = 0; i < n; ++i) add_entry(string_at(orig, i, "original"), string_at(trans, i, "translation"));

    // Revision x.1 adds system-dependent strings ("%<PRIuMAX> bytes"): static segments with named
    // segments between them. A named segment is written back as "<NAME>", the .po spelling.
    if ((revision & 0xFFFF) >= 1 && size >= 48 && u32(36) > 0) {
        const uint64_t nseg = u32(28), segtab = u32(32), nsd = u32(36), otab = u32(40), ttab = u32(44);
        MOEKD_CHECK(segtab + 8 * nseg <= size && otab + 4 * nsd <= size && ttab + 4 * nsd <= size, "gettext: '",
                    name, "' is corrupt: its system-dependent string tables (", nseg, " segments, ", nsd,
                    " strings) run past the end of the file (", size, " bytes)");
        std::vector<std::string> segs;
        for (uint64_t k = 0; k < nseg; ++k) {
            const uint64_t len = u32(segtab + 8 * k), off = u32(segtab + 8 * k + 4);
            MOEKD_CHECK(off + len <= size, "gettext: '", name, "' is corrupt: system-dependent segment ", k,
                        " runs past the end of the file");
            const std::string_view sv = b.substr(off, len);
            segs.emplace_back(sv.substr(0, sv.find('\0')));
        }
        auto sysdep = [&](uint64_t table, uint64_t i, const char* which) {
            const uint64_t desc = u32(table + 4 * i);
            std::string out;
            auto bad = [&](const char* why) {
                MOEKD_CHECK(false, "gettext: '", name, "' is corrupt: system-dependent entry ", i, " (", which, "): ",
                            why);
            };
            if (desc + 4 > size) bad("descriptor past the end of the file");
            uint64_t pos = u32(desc);
            for (uint64_t j = desc + 4;; j += 8) {
                if (j + 8 > size) bad("segment list runs past the end of the file");
                const uint64_t len = u32(j), ref = u32(j + 4);
                if (pos + len > size) bad("static segment past the end of the file");
                if (out.size() + len > size) bad("implausibly long string");
                out.append(b.substr(pos, len));
                pos += len;
                if (ref == 0xFFFFFFFFu) break;
                if (ref >= nseg) bad("reference to a segment that does not exist");
                out += "<" + segs[ref] + ">";
            }
            if (!out.empty() && out.back() == '\0') out.pop_back();
            return out;
        };
        for (uint64_t i = 0; i < nsd; ++i) {
            const std::string o = sysdep(otab, i, "original"), t = sysdep(ttab, i, "translation");
            add_entry(o, t);
        }
    }
    return cat;
}

/// Reads and parses a .mo file.
/// A missing file or a directory is named ("cannot open '...': missing file"); io::read_file.
inline MoCatalog read_mo(const std::string& path) {
    const std::string why = io::unreadable_reason(path);
    MOEKD_CHECK(why.empty(), "gettext: cannot open '", path, "': ", why);
    return parse_mo(io::read_file(path, "gettext"), path);
}

/// The charset a catalog header declares ("charset=UTF-8" in Content-Type), lower-cased; empty
/// when there is none.
inline std::string mo_charset(std::string_view header) {
    const size_t at = header.find("charset=");
    if (at == std::string_view::npos) return "";
    std::string cs;
    for (size_t i = at + 8; i < header.size() && !detail::ascii_space(static_cast<unsigned char>(header[i])) &&
                            header[i] != ';'; ++i)
        cs.push_back(static_cast<char>(header[i] >= 'A' && header[i] <= 'Z' ? header[i] + 32 : header[i]));
    return cs;
}

/// Converts text in `charset` (an iconv name, e.g. "iso-8859-2") to UTF-8 with the C library's
/// iconv. Returns false when iconv does not know the charset or the text is not valid in it.
inline bool convert_to_utf8(std::string_view text, const std::string& charset, std::string& out) {
    iconv_t cd = iconv_open("UTF-8", charset.c_str());
    if (cd == reinterpret_cast<iconv_t>(-1)) return false;
    std::string in(text);
    out.assign(4 * in.size() + 4, '\0');
    char* ip = in.data();
    char* op = out.data();
    size_t il = in.size(), ol = out.size();
    const size_t r = iconv(cd, &ip, &il, &op, &ol);
    iconv_close(cd);
    if (r == static_cast<size_t>(-1) || il != 0) return false;
    out.resize(out.size() - ol);
    return true;
}

/// Builds one language's corpus from catalogs: cleans every entry (clean_pair), uses the
/// singular of plural entries (msgid with msgstr[0]), ignores contexts, converts catalogs whose
/// header declares another charset (e2fsprogs and gettext ship ISO-8859-x ones) to UTF-8 with
/// iconv (entries it cannot convert count as invalid_utf8), de-duplicates (same English + same
/// translation, across all catalogs added) and splits by split_of(English). Entries are kept in
/// the order they are added, so a fixed catalog order gives the same files every run.
class GettextCorpus {
public:
    struct Options {
        double valid_frac = 0.01;
        double test_frac = 0.01;
        size_t max_bytes = 0;  // 0: no length limit
    };

    GettextCorpus() : GettextCorpus(Options{}) {}
    explicit GettextCorpus(Options opt) : opt_(opt) { (void)split_of("", opt.valid_frac, opt.test_frac); }

    /// Adds one entry; returns why it was dropped (Drop::none if kept).
    Drop add(const MoEntry& e) {
        ++entries_;
        std::string en = e.msgid;
        std::string tr = e.translations.empty() ? std::string() : e.translations[0];
        Drop d = clean_pair(en, tr, opt_.max_bytes);
        if (d == Drop::none) {
            std::string key = en;
            key.push_back('\0');
            key += tr;
            if (!seen_.insert(std::move(key)).second) d = Drop::duplicate;
        }
        ++dropped_[static_cast<int>(d)];
        if (d != Drop::none) return d;
        const int s = static_cast<int>(split_of(en, opt_.valid_frac, opt_.test_frac));
        en_[s].push_back(std::move(en));
        tr_[s].push_back(std::move(tr));
        return d;
    }

    /// Adds every entry of a catalog, converted to UTF-8 first if its header names another charset.
    void add(const MoCatalog& cat) {
        ++catalogs_;
        const std::string cs = mo_charset(cat.header);
        const bool utf8 = cs.empty() || cs == "utf-8" || cs == "utf8" || cs == "ascii" || cs == "us-ascii" ||
                          cs == "charset";  // "charset=CHARSET": the template's placeholder
        for (const MoEntry& e : cat.entries) {
            if (utf8) { add(e); continue; }
            MoEntry u;
            u.msgid = e.msgid;
            u.translations.resize(1);
            if (!e.translations.empty() && !e.translations[0].empty() &&
                !(convert_to_utf8(e.msgid, cs, u.msgid) && convert_to_utf8(e.translations[0], cs, u.translations[0]))) {
                ++entries_;
                ++dropped_[static_cast<int>(Drop::invalid_utf8)];
                continue;
            }
            add(u);
        }
    }

    const std::vector<std::string>& english(Split s) const { return en_[static_cast<int>(s)]; }
    const std::vector<std::string>& translation(Split s) const { return tr_[static_cast<int>(s)]; }
    int64_t entries() const { return entries_; }    // entries seen (header entries excluded)
    int64_t catalogs() const { return catalogs_; }
    int64_t count(Drop d) const { return dropped_[static_cast<int>(d)]; }  // count(Drop::none) = kept
    int64_t translated() const { return entries_ - count(Drop::untranslated); }

private:
    Options opt_;
    std::array<std::vector<std::string>, 3> en_, tr_;
    std::unordered_set<std::string> seen_;
    std::array<int64_t, kDropReasons> dropped_{};
    int64_t entries_ = 0, catalogs_ = 0;
};

/// The language of a catalog from its path ".../<lang>/LC_MESSAGES/<domain>.mo", or "" when the
/// path does not have that shape. Regional variants come back as they are ("fr_CA", "sr@latin").
inline std::string mo_language(std::string_view path) {
    const size_t lc = path.rfind("/LC_MESSAGES/");
    if (lc == std::string_view::npos || lc == 0) return "";
    const size_t slash = path.rfind('/', lc - 1);
    return std::string(path.substr(slash == std::string_view::npos ? 0 : slash + 1,
                                   lc - (slash == std::string_view::npos ? 0 : slash + 1)));
}

}  // namespace moekd::data

// atomic_file_test.cpp — io/atomic_file.hpp against what sits at a target path: symlinks
// (absolute, relative, chains, dangling) are followed and stay links, FIFOs, device nodes (our
// own, made with mknod in a temp dir) and directories are refused and left as they were, and a
// full disk (a 64 KiB tmpfs mounted here when we may, else the injected fault) is an error naming
// the file that leaves the previous content and no temp file behind. AppendFile likewise.
#include <catch2/catch.hpp>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <moekd/io/atomic_file.hpp>
#include <moekd/io/read_file.hpp>

using namespace moekd;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {
struct Scratch {
    fs::path dir = fs::temp_directory_path() / ("moekd_atomic_test_" + std::to_string(::getpid()));
    Scratch() { fs::create_directories(dir); }
    ~Scratch() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    std::string operator()(const std::string& name) const { return (dir / name).string(); }
};
std::string slurp(const std::string& p) { return io::read_file(p, "test"); }
mode_t lmode(const std::string& p) {
    struct stat st {};
    REQUIRE(::lstat(p.c_str(), &st) == 0);
    return st.st_mode;
}
/// The names in dir (to see that no temp file was left behind).
std::vector<std::string> names(const std::string& dir) {
    std::vector<std::string> out;
    for (auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
}
/// Sets the injected write fault for the scope.
struct Fault {
    explicit Fault(long long bytes) { io::detail::write_fault() = bytes; }
    ~Fault() { io::detail::write_fault() = -1; }
};
/// A 64 KiB tmpfs mounted at a fresh folder (root only); mounted() false when that is not possible.
struct SmallTmpfs {
    std::string dir;
    bool ok = false;
    std::string why;
    explicit SmallTmpfs(const Scratch& s) : dir(s("full")) {
        fs::create_directories(dir);
        ok = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=64k") == 0;
        if (!ok) why = std::strerror(errno);
    }
    ~SmallTmpfs() {
        if (ok) ::umount2(dir.c_str(), MNT_DETACH);
    }
};
}  // namespace

TEST_CASE("a symlinked target: the file it points to gets the content, the link stays", "[io][atomic]") {
    Scratch s;
    fs::create_directories(s("real"));
    io::write_text_atomic(s("real/data.txt"), "old");
    SECTION("absolute link") {
        fs::create_symlink(s("real/data.txt"), s("abs"));
        io::write_text_atomic(s("abs"), "new");
        CHECK(fs::read_symlink(s("abs")) == s("real/data.txt"));
    }
    SECTION("relative link, resolved against its own folder") {
        fs::create_directories(s("links"));
        fs::create_symlink("../real/data.txt", s("links/rel"));
        io::write_text_atomic(s("links/rel"), "new");
        CHECK(fs::read_symlink(s("links/rel")) == "../real/data.txt");
    }
    SECTION("a chain of links") {
        fs::create_symlink("real/data.txt", s("one"));
        fs::create_symlink(s("one"), s("two"));
        fs::create_symlink("two", s("three"));
        io::write_text_atomic(s("three"), "new");
        for (auto* l : {"one", "two", "three"}) CHECK(S_ISLNK(lmode(s(l))));
    }
    CHECK(slurp(s("real/data.txt")) == "new");
    CHECK(S_ISREG(lmode(s("real/data.txt"))));
    CHECK(names(s("real")) == std::vector<std::string>{"data.txt"});
}

TEST_CASE("a dangling symlink creates the file it names, a loop is an error", "[io][atomic]") {
    Scratch s;
    fs::create_symlink("made.txt", s("dangling"));
    io::write_text_atomic(s("dangling"), "hello");
    CHECK(S_ISLNK(lmode(s("dangling"))));
    CHECK(slurp(s("made.txt")) == "hello");
    fs::create_symlink("loop_b", s("loop_a"));
    fs::create_symlink("loop_a", s("loop_b"));
    CHECK_THROWS_WITH(io::write_text_atomic(s("loop_a"), "x"), Contains("too many levels of symbolic links"));
}

TEST_CASE("a FIFO, a device node or a directory at the target is refused and left as it is", "[io][atomic]") {
    Scratch s;
    REQUIRE(::mkfifo(s("fifo").c_str(), 0600) == 0);
    CHECK_THROWS_WITH(io::write_text_atomic(s("fifo"), "x"), Contains(s("fifo")) && Contains("is a FIFO") &&
                                                               Contains("refusing to replace it"));
    CHECK(S_ISFIFO(lmode(s("fifo"))));
    CHECK_THROWS_WITH(io::AppendFile(s("fifo")), Contains("is a FIFO"));

    fs::create_directories(s("dir"));
    CHECK_THROWS_WITH(io::write_text_atomic(s("dir"), "x"), Contains(s("dir")) && Contains("is a directory"));
    CHECK(fs::is_directory(s("dir")));
    CHECK(fs::is_empty(s("dir")));

    // our own /dev/full-like node (char 1:7), never a system one
    if (::mknod(s("full").c_str(), S_IFCHR | 0600, ::makedev(1, 7)) != 0) {
        WARN("device-node case skipped: mknod failed (" << std::strerror(errno) << "; needs root / CAP_MKNOD)");
    } else {
        CHECK_THROWS_WITH(io::write_text_atomic(s("full"), "x"), Contains("is a character device"));
        fs::create_symlink(s("full"), s("to_full"));  // --save link-to-/dev/full
        CHECK_THROWS_WITH(io::write_text_atomic(s("to_full"), "x"),
                          Contains("'" + s("to_full") + "' (resolved to '" + s("full") + "') is a character device"));
        CHECK_THROWS_WITH(io::AppendFile(s("to_full")), Contains("is a character device"));
        CHECK(S_ISCHR(lmode(s("full"))));
        CHECK(S_ISLNK(lmode(s("to_full"))));
    }
    CHECK(names(s.dir.string()).size() == (fs::exists(s("full")) ? 4u : 2u));  // no temp file anywhere
}

TEST_CASE("an existing file keeps its permissions, a new one follows the umask", "[io][atomic]") {
    Scratch s;
    io::write_text_atomic(s("secret"), "a");
    REQUIRE(::chmod(s("secret").c_str(), 0640) == 0);
    io::write_text_atomic(s("secret"), "b");
    CHECK((lmode(s("secret")) & 07777) == 0640);
    const mode_t old = ::umask(027);
    io::write_text_atomic(s("fresh"), "c");
    ::umask(old);
    CHECK((lmode(s("fresh")) & 07777) == 0640);  // 0644 & ~027
}

TEST_CASE("a full disk is an error naming the file, the previous content stays, no temp file", "[io][atomic][full]") {
    Scratch s;
    SmallTmpfs t(s);
    std::string dir = t.dir;
    if (!t.ok) {
        WARN("no tmpfs could be mounted (" << t.why << "): the full disk is the injected ENOSPC fault only");
    }
    const std::string p = dir + "/results.md";
    io::write_text_atomic(p, "previous results\n");
    const std::string big(t.ok ? 200 << 10 : 5000, 'x');
    auto fill = [&] {
        if (t.ok) return io::write_text_atomic(p, big);
        Fault f(1000);
        io::write_text_atomic(p, big);
    };
    CHECK_THROWS_WITH(fill(), Contains("'" + p + "'") && Contains("No space left on device") && Contains("untouched"));
    CHECK(slurp(p) == "previous results\n");
    CHECK(names(dir) == std::vector<std::string>{"results.md"});
    // through a symlink onto the full disk: the error names the link and where it leads
    fs::create_symlink(p, s("link.md"));
    CHECK_THROWS_WITH(t.ok ? io::write_text_atomic(s("link.md"), big) : (Fault(0), io::write_text_atomic(s("link.md"), big)),
                      Contains("'" + s("link.md") + "' (resolved to '" + p + "')") && Contains("No space"));
    CHECK(slurp(p) == "previous results\n");
    // a log appended to until the disk is full
    io::AppendFile log(dir + "/log.jsonl");
    std::string err;
    try {
        Fault f(t.ok ? -1 : 3000);
        for (int i = 0; i < 100000; ++i) log << "{\"step\": " + std::to_string(i) + ", \"loss\": 1.0}\n";
    } catch (const Error& e) {
        err = e.what();
    }
    CHECK_THAT(err, Contains("appending to '" + dir + "/log.jsonl' failed") && Contains("No space left on device"));
    CHECK_NOTHROW(log.close());
}

TEST_CASE("the injected fault: every write checked, also when the disk fills at the first byte", "[io][atomic][full]") {
    Scratch s;
    const std::string p = s("model.bin");
    io::write_text_atomic(p, "v1");
    for (long long budget : {0LL, 1LL, 4095LL}) {
        INFO("budget " << budget);
        Fault f(budget);
        CHECK_THROWS_WITH(io::write_text_atomic(p, std::string(10000, 'y')), Contains(p) && Contains("No space left"));
    }
    CHECK(slurp(p) == "v1");
    CHECK(names(s.dir.string()) == std::vector<std::string>{"model.bin"});
    {
        io::AppendFile a(s("log"));
        a << "line 1\n";
        Fault f(3);
        CHECK_THROWS_WITH(a << "line 2\n", Contains("appending to '" + s("log") + "' failed"));
    }
    CHECK(slurp(s("log")).rfind("line 1\nlin", 0) == 0);
    io::write_text_atomic(p, "v2");  // no fault: works again
    CHECK(slurp(p) == "v2");
}

// read_file.hpp — read a whole input file with an error that names it and says what is wrong:
// missing, a directory, unreadable, or failing part-way. Anything that can be read from works:
// regular files, pipes and process substitution (`<(cmd)`, /dev/fd/N), and "-" for stdin, as in
// sacreBLEU. Readers of real data call this instead of opening streams themselves.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

#include "../core/error.hpp"

namespace moekd::io {

/// Why `path` cannot be opened for reading, as a sentence fragment ("" when it can be tried).
inline std::string unreadable_reason(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return "missing file";
        return std::string("cannot access it: ") + std::strerror(errno);
    }
    if (S_ISDIR(st.st_mode)) return "is a directory, not a file";
    return "";
}

/// The whole content of `path` ("-": standard input). `what` names the reader in errors
/// ("score", "parallel corpus", ...).
inline std::string read_file(const std::string& path, std::string_view what = "read") {
    MOEKD_CHECK(!path.empty(), what, ": empty file name");
    int fd = 0;
    const bool is_stdin = path == "-";
    if (!is_stdin) {
        const std::string why = unreadable_reason(path);
        MOEKD_CHECK(why.empty(), what, ": '", path, "': ", why);
        fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        MOEKD_CHECK(fd >= 0, what, ": cannot open '", path, "': ", std::strerror(errno));
    }
    std::string out;
    char buf[1 << 16];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            const int err = errno;
            if (!is_stdin) ::close(fd);
            MOEKD_CHECK(false, what, ": reading '", is_stdin ? "<stdin>" : path, "' failed: ", std::strerror(err));
        }
        if (n == 0) break;
        out.append(buf, size_t(n));
    }
    if (!is_stdin) ::close(fd);
    return out;
}

}  // namespace moekd::io

// atomic_file.hpp — every file moekd writes goes through here, so that every write is checked
// (each write(2), the fsync and the close) and an error names the file.
//
// write_file_atomic / write_text_atomic: a crash or kill -9 at any moment leaves either the
// previous file or the complete new one: write a temp file beside it, fsync, rename over, fsync
// the directory. The target is resolved first: a symlink is followed (the temp file goes beside
// the real file, which is the one replaced, so the link keeps pointing at the new content), and a
// target that exists but is not a regular file (a FIFO, a device node such as /dev/full, a
// directory, a socket) is refused with an error instead of being replaced by a regular file.
// An existing file keeps its permission bits (and, where the writer may, its owner); a new one
// gets 0644 less the umask.
//
// AppendFile: a log opened for appending (JSONL, progress): each line is one checked write(2),
// close() is checked too. Same target rules.
//
// For tests, detail::write_fault() can make the next writes fail as a full disk does (ENOSPC)
// after a number of bytes, for the places where a test cannot mount a small file system.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"

namespace moekd::io {

namespace detail {

/// Bytes that may still be written before writes fail with ENOSPC; negative: no fault (default).
inline std::atomic<long long>& write_fault() {
    static std::atomic<long long> budget{-1};
    return budget;
}

/// write(2) that honours the injected fault.
inline ssize_t checked_write_call(int fd, const void* p, size_t n) {
    long long b = write_fault().load();
    if (b >= 0) {
        if (b == 0) {
            errno = ENOSPC;
            return -1;
        }
        if (static_cast<long long>(n) > b) n = static_cast<size_t>(b);
        const ssize_t w = ::write(fd, p, n);
        if (w > 0) write_fault().fetch_sub(w);
        return w;
    }
    return ::write(fd, p, n);
}

/// Writes all of [p, p+n) to fd; returns 0 or the errno of the failure.
inline int write_all(int fd, const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    size_t done = 0;
    while (done < n) {
        const ssize_t w = checked_write_call(fd, c + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return errno;
        if (w == 0) return ENOSPC;  // no progress: treat as a full device
        done += size_t(w);
    }
    return 0;
}

inline const char* file_kind(mode_t m) {
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "not a regular file";
}

}  // namespace detail

/// Where a write to `path` really goes: symlinks followed (relative links against their own
/// directory, chains up to 40 deep, as the kernel does). Throws when the final target exists and
/// is not a regular file, or the link chain loops. The result may not exist yet.
inline std::string resolve_write_target(const std::string& path) {
    MOEKD_CHECK(!path.empty(), "write: empty file name");
    std::string p = path;
    for (int depth = 0;; ++depth) {
        struct stat st {};
        if (::lstat(p.c_str(), &st) != 0) {
            MOEKD_CHECK(errno == ENOENT, "write: cannot inspect '", p, "': ", std::strerror(errno));
            return p;  // absent: created there
        }
        if (S_ISLNK(st.st_mode)) {
            MOEKD_CHECK(depth < 40, "write: '", path, "': too many levels of symbolic links");
            std::vector<char> buf(size_t(st.st_size > 0 ? st.st_size : PATH_MAX) + 1);
            const ssize_t n = ::readlink(p.c_str(), buf.data(), buf.size() - 1);
            MOEKD_CHECK(n >= 0, "write: cannot read the link '", p, "': ", std::strerror(errno));
            std::string target(buf.data(), size_t(n));
            if (!target.empty() && target[0] != '/') {
                const size_t slash = p.find_last_of('/');
                if (slash != std::string::npos) target = p.substr(0, slash + 1) + target;
            }
            p = target;
            continue;
        }
        MOEKD_CHECK(S_ISREG(st.st_mode), "write: '", path, "'", (p == path ? "" : " (resolved to '" + p + "')"),
                    " is ", detail::file_kind(st.st_mode), "; refusing to replace it (give the path of a regular file)");
        return p;
    }
}

inline void write_file_atomic(const std::string& path, const void* data, size_t size) {
    const std::string real = resolve_write_target(path);
    struct stat old {};
    const bool existed = ::stat(real.c_str(), &old) == 0;
    const std::string tmp = real + ".tmp." + std::to_string(::getpid());
    // a new file: 0644 through the umask; an existing one: private until its own mode is set
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, existed ? 0600 : 0644);
    MOEKD_CHECK(fd >= 0, "write: cannot create '", tmp, "' (to write '", path, "'): ", std::strerror(errno));
    int err = detail::write_all(fd, data, size);
    if (existed && err == 0) {
        if (struct stat now {}; ::fstat(fd, &now) == 0 && (now.st_uid != old.st_uid || now.st_gid != old.st_gid))
            (void)!::fchown(fd, old.st_uid, old.st_gid);  // best effort: only root may give a file away
        if (::fchmod(fd, old.st_mode & 07777) != 0) err = errno;
    }
    if (err == 0 && ::fsync(fd) != 0) err = errno;
    if (::close(fd) != 0 && err == 0) err = errno;
    if (err != 0) {
        ::unlink(tmp.c_str());
        MOEKD_CHECK(false, "write: writing '", path, "'", (real == path ? "" : " (resolved to '" + real + "')"),
                    " failed: ", std::strerror(err), " (", size,
                    " bytes; the previous file, if any, is untouched)");
    }
    if (::rename(tmp.c_str(), real.c_str()) != 0) {
        err = errno;
        ::unlink(tmp.c_str());
        MOEKD_CHECK(false, "write: renaming '", tmp, "' to '", real, "' failed: ", std::strerror(err));
    }
    const size_t slash = real.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : real.substr(0, slash + 1);
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
}

inline void write_file_atomic(const std::string& path, const std::vector<uint8_t>& bytes) {
    write_file_atomic(path, bytes.data(), bytes.size());
}

/// A text file (results, hypotheses, a tokenizer's training text), written atomically and checked.
inline void write_text_atomic(const std::string& path, std::string_view text) {
    write_file_atomic(path, text.data(), text.size());
}

/// A file opened for appending (a JSONL log): every write checked, errors name the file.
/// Default-constructed: closed, writes are ignored (ranks other than 0 hold one of these).
class AppendFile {
public:
    AppendFile() = default;
    /// truncate: start the file empty (a fresh run) instead of appending to it.
    explicit AppendFile(const std::string& path, bool truncate = false) { open(path, truncate); }
    AppendFile(const AppendFile&) = delete;
    AppendFile& operator=(const AppendFile&) = delete;
    AppendFile(AppendFile&& o) noexcept : fd_(o.fd_), path_(std::move(o.path_)) { o.fd_ = -1; }
    AppendFile& operator=(AppendFile&& o) noexcept {
        if (this != &o) {
            if (fd_ >= 0) ::close(fd_);
            fd_ = o.fd_;
            path_ = std::move(o.path_);
            o.fd_ = -1;
        }
        return *this;
    }
    ~AppendFile() {
        if (fd_ >= 0) ::close(fd_);  // errors were reported by write(); close() reports its own
    }

    void open(const std::string& path, bool truncate = false) {
        close();
        const std::string real = resolve_write_target(path);
        fd_ = ::open(real.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0644);
        MOEKD_CHECK(fd_ >= 0, "write: cannot open '", path, "' for appending: ", std::strerror(errno));
        path_ = path;
    }
    bool is_open() const { return fd_ >= 0; }
    const std::string& path() const { return path_; }

    /// Appends `s` with one checked write (no buffering: a kill leaves whole lines behind).
    AppendFile& write(std::string_view s) {
        if (fd_ < 0) return *this;
        const int err = detail::write_all(fd_, s.data(), s.size());
        MOEKD_CHECK(err == 0, "write: appending to '", path_, "' failed: ", std::strerror(err));
        return *this;
    }
    AppendFile& operator<<(std::string_view s) { return write(s); }

    /// Closes, checking the close (where a network file system reports a late write error).
    void close() {
        if (fd_ < 0) return;
        const int fd = fd_;
        fd_ = -1;
        MOEKD_CHECK(::close(fd) == 0, "write: closing '", path_, "' failed: ", std::strerror(errno));
    }

private:
    int fd_ = -1;
    std::string path_;
};

}  // namespace moekd::io

// error.hpp — the one exception type of moekd and the checks that throw it.
//
// Every check names the op and the shapes involved (and a hint where one helps), so a user
// who passes a (B, T, D) tensor where (B, D) was expected reads that in the message.
// Checks are always on: moekd never trades a clear error for undefined behaviour.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace moekd {

/// Thrown for every misuse moekd detects: shape mismatch, bad index, device mix, bad file.
class Error : public std::runtime_error {
public:
    explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
inline void append_all(std::ostringstream&) {}
template <class A, class... R>
void append_all(std::ostringstream& os, const A& a, const R&... r) {
    os << a;
    append_all(os, r...);
}
}  // namespace detail

/// Builds a message from any streamable pieces: `msg("matmul: ", a.shape(), " vs ", b.shape())`.
template <class... A>
std::string msg(const A&... a) {
    std::ostringstream os;
    detail::append_all(os, a...);
    return os.str();
}

}  // namespace moekd

/// MOEKD_CHECK(cond, pieces...): throw moekd::Error with the pieces joined when cond is false.
#define MOEKD_CHECK(cond, ...)                                              \
    do {                                                                    \
        if (!(cond)) throw ::moekd::Error(::moekd::msg(__VA_ARGS__));       \
    } while (0)

// cli_checks.hpp — CLI11 validators for the examples' numeric flags, with messages a user can act
// on (issue 16): CLI11's own CLI::PositiveNumber prints "Value 0 not in range 0.000000 to
// 1797693134862315708145274237317043567980...", and lets "abc" through to the conversion. These
// print, after CLI11's "--flag: " prefix, what is wrong and what is allowed:
//   --lr: 0 is not > 0          --alpha: 1.5 is not in [0, 1]          --lr: 'abc' is not a number
//   --seed: '-1' is not a non-negative integer
//
//   app.add_option("--lr", lr, "...")->check(cli_checks::positive());
//   app.add_option("--dropout", p, "...")->check(cli_checks::in(0.0, 1.0, /*hi_open=*/true));
// Header-only; an example includes it as "../common/cli_checks.hpp".
#pragma once

#include <CLI/CLI.hpp>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <string>

namespace cli_checks {

inline std::string show(double v) {
    std::ostringstream os;
    os << v;
    return os.str();
}

/// A finite number in [lo, hi] (an open end with lo_open / hi_open; +-infinity for no bound).
inline CLI::Validator in(double lo, double hi, bool lo_open = false, bool hi_open = false) {
    const bool no_hi = std::isinf(hi), no_lo = std::isinf(lo);
    std::string desc;
    if (no_hi && !no_lo) desc = std::string(lo_open ? "> " : ">= ") + show(lo);
    else if (no_lo && !no_hi) desc = std::string(hi_open ? "< " : "<= ") + show(hi);
    else desc = std::string(lo_open ? "(" : "[") + show(lo) + ", " + show(hi) + (hi_open ? ")" : "]");
    return CLI::Validator(
        [=](std::string& s) -> std::string {
            errno = 0;
            char* end = nullptr;
            const double v = std::strtod(s.c_str(), &end);
            if (s.empty() || end == s.c_str() || *end != '\0') return "'" + s + "' is not a number";
            if (!std::isfinite(v) || errno == ERANGE) return "'" + s + "' is not a finite number";
            const bool ok = (no_lo || (lo_open ? v > lo : v >= lo)) && (no_hi || (hi_open ? v < hi : v <= hi));
            if (!ok) return s + " is not " + (no_lo || no_hi ? desc : "in " + desc);
            return std::string();
        },
        desc);
}

inline constexpr double kInf = HUGE_VAL;

/// > 0 (learning rates, sizes, epochs that must run, temperatures).
inline CLI::Validator positive() { return in(0.0, kInf, /*lo_open=*/true); }
/// >= 0 (weights that may switch a term off, counts where 0 means "none").
inline CLI::Validator non_negative() { return in(0.0, kInf); }

/// Digits only, at most 2^64 - 1 (seeds: CLI11 would take "-1" for a uint64_t as 2^64 - 1).
inline CLI::Validator seed() {
    return CLI::Validator(
        [](std::string& s) -> std::string {
            if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos)
                return "'" + s + "' is not a non-negative integer";
            errno = 0;
            (void)std::strtoull(s.c_str(), nullptr, 10);
            if (errno == ERANGE) return s + " is larger than 2^64 - 1";
            return std::string();
        },
        "UINT64");
}

}  // namespace cli_checks

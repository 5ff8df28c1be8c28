// fuzz_json.cpp — libFuzzer target for json::parse: any text gives a value or a moekd::Error
// (never a crash, overflow or stack exhaustion), and what parses round-trips through dump():
// parse(dump(v)) equals v, numbers compared by value (dump writes an integral double such as
// 2.0 as "2", which reads back as an integer; -0.0 comes back as 0, the same value).
#include <moekd/io/json.hpp>

namespace {
using moekd::json::Value;

bool equal(const Value& a, const Value& b) {
    if (a.is_number() && b.is_number()) {
        if (a.is_int() && b.is_int()) return a.as_int() == b.as_int();
        return a.as_double() == b.as_double();
    }
    if (a.v.index() != b.v.index()) return false;
    if (a.is_null()) return true;
    if (a.is_bool()) return a.as_bool() == b.as_bool();
    if (a.is_string()) return a.as_string() == b.as_string();
    if (a.is_array()) {
        const auto &x = a.as_array(), &y = b.as_array();
        if (x.size() != y.size()) return false;
        for (size_t i = 0; i < x.size(); ++i)
            if (!equal(x[i], y[i])) return false;
        return true;
    }
    const auto &x = a.as_object(), &y = b.as_object();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i)
        if (x[i].first != y[i].first || !equal(x[i].second, y[i].second)) return false;
    return true;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace moekd;
    const std::string text(reinterpret_cast<const char*>(data), size);
    Value v;
    try {
        v = json::parse(text);
    } catch (const Error&) {
        return 0;
    }
    std::string once;
    try {
        once = json::dump(v);
    } catch (const Error&) {
        return 0;  // a number that overflowed to +-inf cannot be written back (a clear error)
    }
    if (!equal(json::parse(once), v)) __builtin_trap();
    return 0;
}

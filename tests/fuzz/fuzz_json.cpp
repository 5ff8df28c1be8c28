// fuzz_json.cpp — libFuzzer target for json::parse (nlohmann/json behind moekd's strict layer):
// any text gives a value or a moekd::Error (never a crash, a nlohmann exception, overflow or
// stack exhaustion); what parses keeps the layer's promises (integers stored as int64, at most
// json::kMaxDepth levels, no duplicate keys) and round-trips through dump(): parse(dump(v)) == v
// (numbers compare by value: -0.0 == 0) and dump is a fixed point.
#include <moekd/io/json.hpp>

#include <algorithm>
#include <vector>

namespace {
using moekd::json::Value;

void check_promises(const Value& v, size_t depth) {
    if (v.is_number_unsigned()) __builtin_trap();  // every integer is stored signed
    if (!v.is_structured()) return;
    if (depth >= moekd::json::kMaxDepth) __builtin_trap();  // v is the (depth+1)-th level
    if (v.is_object()) {
        std::vector<std::string> keys;
        for (const auto& [k, x] : v.get_ref<const moekd::json::Object&>()) keys.push_back(k);
        std::sort(keys.begin(), keys.end());
        if (std::adjacent_find(keys.begin(), keys.end()) != keys.end()) __builtin_trap();
    }
    for (const Value& x : v) check_promises(x, depth + 1);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace moekd;
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    Value v;
    try {
        v = json::parse(text);
    } catch (const Error&) {
        return 0;
    }
    check_promises(v, 0);
    const std::string once = json::dump(v);  // a parsed value is always writable (finite, valid UTF-8)
    const Value back = json::parse(once);
    if (back != v) __builtin_trap();
    if (json::dump(back) != once) __builtin_trap();
    return 0;
}

// json.hpp — JSON for file headers (safetensors, checkpoints, sharded indexes, HF configs):
// nlohmann/json's ordered_json (objects keep insertion order), read through a strict layer.
//
// nlohmann's own parse() is already strict RFC 8259 in most ways (no comments, no trailing
// commas, valid UTF-8, no leading zeros, no NaN/Infinity, nothing after the value); json::parse
// adds what the readers of untrusted files rely on that it does not give:
//   - a duplicate key is an error (nlohmann keeps the last one silently);
//   - nesting is capped at kMaxDepth levels (dump() and operator== recurse);
//   - integers are exact int64 or an error: 9223372036854775808 (nlohmann: uint64) and
//     99999999999999999999 (nlohmann: rounded to a double) are rejected, so a size or offset
//     is never silently rounded; every parsed integer is stored as int64 (is_number_integer(),
//     get<int64_t>() is exact);
//   - a leading byte order mark is an error (nlohmann skips one);
//   - every defect is a moekd::Error (never a nlohmann exception), as the fuzzers require.
// Objects are built without nlohmann's per-key linear look-up and checked for duplicates once,
// by sorting, so a header of n keys costs O(n log n), not O(n^2).
//
// Writing: build a Value with nlohmann's initializer lists ({{"dtype", "F32"}, {"shape", {2, 3}}})
// and call json::dump (compact; a non-finite number or invalid UTF-8 is a moekd::Error, where
// nlohmann would write null or throw its own exception). Reading fields with a type check that
// names the field: json::find / json::get_int / json::get_string, below.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../core/error.hpp"

namespace moekd::json {

using Value = nlohmann::ordered_json;  // objects keep insertion order (a safetensors header's order)
using Object = Value::object_t;        // nlohmann::ordered_map: a vector of (key, Value) pairs
using Array = Value::array_t;          // std::vector<Value>

inline constexpr size_t kMaxDepth = 64;  // arrays / objects nested inside each other

namespace detail {

/// nlohmann's message without its id: "[json.exception.parse_error.101] parse error at ..." ->
/// "parse error at ...".
inline std::string message_of(const nlohmann::detail::exception& e) {
    std::string_view w = e.what();
    if (const size_t p = w.find("] "); !w.empty() && w[0] == '[' && p != std::string_view::npos) w.remove_prefix(p + 2);
    return std::string(w);
}

/// nlohmann SAX handler that builds the Value and enforces what nlohmann's own parser does not.
class StrictBuilder {
public:
    explicit StrictBuilder(Value& root) : root_(root) {}

    bool null() { return put(nullptr) != nullptr; }
    bool boolean(bool b) { return put(b) != nullptr; }
    bool number_integer(int64_t i) { return put(i) != nullptr; }
    bool number_unsigned(uint64_t u) {
        if (u > uint64_t(std::numeric_limits<int64_t>::max())) fail(msg("integer ", u, " does not fit in int64"));
        return put(int64_t(u)) != nullptr;  // stored signed: one integer type for every reader
    }
    bool number_float(double d, const std::string& text) {
        // nlohmann turns an integer literal too large for 64 bits into a (rounded) double
        if (text.find_first_of(".eE") == std::string::npos) fail("integer " + text + " does not fit in int64");
        return put(d) != nullptr;
    }
    bool string(std::string& s) { return put(std::move(s)) != nullptr; }
    bool binary(Value::binary_t&) { fail("binary values are not JSON"); }
    bool start_object(size_t) { return open(Value::object()); }
    bool key(std::string& k) {
        // the vector's own emplace_back: no linear search for k (duplicates are found in end_object)
        auto& obj = open_.back()->get_ref<Object&>();
        obj.emplace_back(std::move(k), nullptr);
        slot_ = &obj.back().second;
        return true;
    }
    bool end_object() {
        const Object& obj = open_.back()->get_ref<const Object&>();
        if (obj.size() > 1) {
            std::vector<const std::string*> keys;
            keys.reserve(obj.size());
            for (const auto& kv : obj) keys.push_back(&kv.first);
            std::sort(keys.begin(), keys.end(), [](auto* a, auto* b) { return *a < *b; });
            const auto d = std::adjacent_find(keys.begin(), keys.end(), [](auto* a, auto* b) { return *a == *b; });
            if (d != keys.end()) fail("duplicate key '" + **d + "' in the object at " + path());
        }
        open_.pop_back();
        return true;
    }
    bool start_array(size_t) { return open(Value::array()); }
    bool end_array() {
        open_.pop_back();
        return true;
    }
    bool parse_error(size_t, const std::string&, const nlohmann::detail::exception& e) { fail(message_of(e)); }

private:
    [[noreturn]] static void fail(const std::string& what) { throw Error("json: " + what); }

    /// Places a value where the parser is: the root, the next array element or the slot of the
    /// key just read. Returns where it went.
    template <class V>
    Value* put(V&& v) {
        if (open_.empty()) {
            root_ = Value(std::forward<V>(v));
            return &root_;
        }
        Value& c = *open_.back();
        if (c.is_array()) {
            auto& a = c.get_ref<Array&>();
            a.emplace_back(std::forward<V>(v));
            return &a.back();
        }
        *slot_ = Value(std::forward<V>(v));
        return slot_;
    }
    bool open(Value empty) {
        if (open_.size() >= kMaxDepth) fail(msg("nesting deeper than ", kMaxDepth, " levels of arrays and objects"));
        open_.push_back(put(std::move(empty)));
        return true;
    }
    /// JSON pointer of the innermost open container ("/a/0/b"), for error messages.
    std::string path() const {
        std::string p;
        for (size_t i = 0; i + 1 < open_.size(); ++i) {
            const Value& c = *open_[i];
            p += '/';
            p += c.is_array() ? std::to_string(c.size() - 1) : c.get_ref<const Object&>().back().first;
        }
        return p.empty() ? "the top level" : p;
    }

    Value& root_;
    std::vector<Value*> open_;  // the arrays / objects being filled, outermost first
    Value* slot_ = nullptr;     // the value of the key just read
};

/// Short text of a value for an error message ("got ..."): at most 80 characters.
inline std::string show(const Value& v) {
    std::string s = v.dump(-1, ' ', false, Value::error_handler_t::replace);
    if (s.size() > 80) s = s.substr(0, 77) + "...";
    return s;
}

/// Throws when `v` holds what JSON text cannot: a NaN or infinity (nlohmann would write null).
/// `at` is the JSON pointer of `v`, grown and shrunk in place on the way down.
inline void check_writable(const Value& v, std::string& at) {
    if (v.is_number_float()) {
        const double d = v.get<double>();
        MOEKD_CHECK(std::isfinite(d), "json: cannot write the non-finite number ", d, " at ", at.empty() ? "/" : at,
                    " (JSON has no NaN or infinity; write null for a missing value)");
    } else if (v.is_structured()) {
        const size_t n = at.size();
        size_t i = 0;
        for (auto it = v.begin(); it != v.end(); ++it, ++i) {
            at += '/';
            if (v.is_object()) at += it.key();
            else at += std::to_string(i);
            check_writable(*it, at);
            at.resize(n);
        }
    }
}

}  // namespace detail

/// Parses one complete JSON text strictly (see the top of the file). Any defect is a
/// moekd::Error "json: <what> ..." with the line and column, or the path, of the problem.
inline Value parse(std::string_view text) {
    if (text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF")
        throw Error("json: the text starts with a byte order mark (RFC 8259: not part of JSON)");
    Value root;
    detail::StrictBuilder b(root);
    const bool ok = Value::sax_parse(text.data(), text.data() + text.size(), &b, Value::input_format_t::json,
                                     /*strict=*/true, /*ignore_comments=*/false);
    MOEKD_CHECK(ok, "json: the text is not valid JSON");  // unreachable: the handler throws instead
    return root;
}

/// JSON text of a value, keys in insertion order: compact (no spaces), or with `indent` spaces a
/// level and one member or element a line.
inline std::string dump(const Value& v, int indent = -1) {
    std::string at;
    detail::check_writable(v, at);
    try {
        return v.dump(indent);
    } catch (const nlohmann::json::exception& e) {  // a string that is not valid UTF-8
        throw Error("json: cannot write the value: " + detail::message_of(e));
    }
}

// ---- typed reads that name what they read ---------------------------------------------------------
// For values from json::parse (integers are int64). A wrong type is a moekd::Error
// "json: <what> must be ...", where nlohmann's get<>() would throw its own exception or convert.

/// Member `key` of an object; nullptr when absent or when `object` is not an object.
inline const Value* find(const Value& object, std::string_view key) {
    if (!object.is_object()) return nullptr;
    const auto it = object.find(key);
    return it == object.end() ? nullptr : &*it;
}
/// Member `key` of an object; an error naming it when absent.
inline const Value& at(const Value& object, std::string_view key) {
    const Value* v = find(object, key);
    MOEKD_CHECK(v, "json: missing key '", key, "'");
    return *v;
}
inline int64_t get_int(const Value& v, std::string_view what) {
    MOEKD_CHECK(v.is_number_integer() && (!v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t(INT64_MAX)),
                "json: ", what, " must be an integer, got ", detail::show(v));
    return v.get<int64_t>();
}
inline double get_double(const Value& v, std::string_view what) {
    MOEKD_CHECK(v.is_number(), "json: ", what, " must be a number, got ", detail::show(v));
    return v.get<double>();
}
inline bool get_bool(const Value& v, std::string_view what) {
    MOEKD_CHECK(v.is_boolean(), "json: ", what, " must be true or false, got ", detail::show(v));
    return v.get<bool>();
}
inline const std::string& get_string(const Value& v, std::string_view what) {
    MOEKD_CHECK(v.is_string(), "json: ", what, " must be a string, got ", detail::show(v));
    return v.get_ref<const std::string&>();
}
inline const Array& get_array(const Value& v, std::string_view what) {
    MOEKD_CHECK(v.is_array(), "json: ", what, " must be an array, got ", v.type_name());
    return v.get_ref<const Array&>();
}
inline const Object& get_object(const Value& v, std::string_view what) {
    MOEKD_CHECK(v.is_object(), "json: ", what, " must be an object, got ", v.type_name());
    return v.get_ref<const Object&>();
}

}  // namespace moekd::json

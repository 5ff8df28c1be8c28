// json.hpp — a small strict JSON reader/writer for file headers (safetensors, checkpoints,
// configs). Strict RFC 8259: no trailing commas, no comments, valid UTF-8, nesting depth capped
// (a hostile header cannot blow the stack); integers kept exact as int64 when they fit.
// Not a general JSON library: objects keep insertion order and duplicate keys are errors.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "../core/error.hpp"

namespace moekd::json {

struct Value;
using Array = std::vector<Value>;
using Object = std::vector<std::pair<std::string, Value>>;

struct Value {
    std::variant<std::nullptr_t, bool, int64_t, double, std::string, Array, Object> v = nullptr;

    Value() = default;
    Value(std::nullptr_t) {}
    Value(bool b) : v(b) {}
    Value(int64_t i) : v(i) {}
    Value(int i) : v(int64_t(i)) {}
    Value(double d) : v(d) {}
    Value(std::string s) : v(std::move(s)) {}
    Value(const char* s) : v(std::string(s)) {}
    Value(Array a) : v(std::move(a)) {}
    Value(Object o) : v(std::move(o)) {}

    bool is_null() const { return std::holds_alternative<std::nullptr_t>(v); }
    bool is_int() const { return std::holds_alternative<int64_t>(v); }
    bool is_number() const { return is_int() || std::holds_alternative<double>(v); }
    bool is_string() const { return std::holds_alternative<std::string>(v); }
    bool is_array() const { return std::holds_alternative<Array>(v); }
    bool is_object() const { return std::holds_alternative<Object>(v); }
    bool is_bool() const { return std::holds_alternative<bool>(v); }

    int64_t as_int(const char* what = "value") const {
        MOEKD_CHECK(is_int(), "json: ", what, " must be an integer");
        return std::get<int64_t>(v);
    }
    double as_double(const char* what = "value") const {
        MOEKD_CHECK(is_number(), "json: ", what, " must be a number");
        return is_int() ? double(std::get<int64_t>(v)) : std::get<double>(v);
    }
    bool as_bool(const char* what = "value") const {
        MOEKD_CHECK(is_bool(), "json: ", what, " must be true or false");
        return std::get<bool>(v);
    }
    const std::string& as_string(const char* what = "value") const {
        MOEKD_CHECK(is_string(), "json: ", what, " must be a string");
        return std::get<std::string>(v);
    }
    const Array& as_array(const char* what = "value") const {
        MOEKD_CHECK(is_array(), "json: ", what, " must be an array");
        return std::get<Array>(v);
    }
    const Object& as_object(const char* what = "value") const {
        MOEKD_CHECK(is_object(), "json: ", what, " must be an object");
        return std::get<Object>(v);
    }
    /// Member lookup; nullptr when absent.
    const Value* find(const std::string& key) const {
        for (auto& [k, val] : as_object())
            if (k == key) return &val;
        return nullptr;
    }
    const Value& at(const std::string& key) const {
        const Value* p = find(key);
        MOEKD_CHECK(p, "json: missing key '", key, "'");
        return *p;
    }
};

namespace detail {

class Parser {
public:
    explicit Parser(const std::string& s) : s_(s) {}

    Value parse_document() {
        Value v = parse_value(0);
        skip_ws();
        if (i_ != s_.size()) fail("trailing characters after the JSON value");
        return v;
    }

private:
    static constexpr int kMaxDepth = 64;

    [[noreturn]] void fail(const std::string& what) const {
        throw Error(msg("json: ", what, " at byte ", i_));
    }
    void skip_ws() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
    }
    bool eat(char c) {
        skip_ws();
        if (i_ < s_.size() && s_[i_] == c) { ++i_; return true; }
        return false;
    }
    void expect(char c) {
        if (!eat(c)) fail(std::string("expected '") + c + "'");
    }
    void literal(const char* word) {
        for (const char* p = word; *p; ++p, ++i_)
            if (i_ >= s_.size() || s_[i_] != *p) fail(std::string("bad literal, expected ") + word);
    }

    Value parse_value(int depth) {
        if (depth > kMaxDepth) fail("nesting deeper than 64 levels");
        skip_ws();
        if (i_ >= s_.size()) fail("unexpected end of input");
        const char c = s_[i_];
        if (c == '{') return parse_object(depth);
        if (c == '[') return parse_array(depth);
        if (c == '"') return Value(parse_string());
        if (c == 't') { literal("true"); return Value(true); }
        if (c == 'f') { literal("false"); return Value(false); }
        if (c == 'n') { literal("null"); return Value(nullptr); }
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
        fail(std::string("unexpected character '") + c + "'");
    }

    Value parse_object(int depth) {
        ++i_;
        Object o;
        if (eat('}')) return Value(std::move(o));
        do {
            skip_ws();
            if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string key");
            std::string k = parse_string();
            for (auto& [kk, vv] : o)
                if (kk == k) fail("duplicate key '" + k + "'");
            expect(':');
            o.emplace_back(std::move(k), parse_value(depth + 1));
        } while (eat(','));
        expect('}');
        return Value(std::move(o));
    }

    Value parse_array(int depth) {
        ++i_;
        Array a;
        if (eat(']')) return Value(std::move(a));
        do a.push_back(parse_value(depth + 1));
        while (eat(','));
        expect(']');
        return Value(std::move(a));
    }

    static void put_utf8(std::string& out, uint32_t cp) {
        if (cp < 0x80) out += char(cp);
        else if (cp < 0x800) { out += char(0xC0 | (cp >> 6)); out += char(0x80 | (cp & 0x3F)); }
        else if (cp < 0x10000) { out += char(0xE0 | (cp >> 12)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
        else { out += char(0xF0 | (cp >> 18)); out += char(0x80 | ((cp >> 12) & 0x3F)); out += char(0x80 | ((cp >> 6) & 0x3F)); out += char(0x80 | (cp & 0x3F)); }
    }
    uint32_t hex4() {
        if (i_ + 4 > s_.size()) fail("truncated \\u escape");
        uint32_t v = 0;
        for (int k = 0; k < 4; ++k) {
            const char c = s_[i_++];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= uint32_t(c - '0');
            else if (c >= 'a' && c <= 'f') v |= uint32_t(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') v |= uint32_t(c - 'A' + 10);
            else fail("bad hex digit in \\u escape");
        }
        return v;
    }
    /// Length of the valid UTF-8 sequence starting at i_, or 0.
    size_t utf8_len() const {
        const auto b = [&](size_t k) { return static_cast<unsigned char>(s_[i_ + k]); };
        const unsigned char c = b(0);
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (n == 0 || i_ + n > s_.size()) return 0;
        for (size_t k = 1; k < n; ++k)
            if ((b(k) & 0xC0) != 0x80) return 0;
        if (n == 2 && c < 0xC2) return 0;                                  // overlong
        if (n == 3) {
            const uint32_t cp = ((c & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
            if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;   // overlong or surrogate
        }
        if (n == 4) {
            const uint32_t cp = ((c & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
            if (cp < 0x10000 || cp > 0x10FFFF) return 0;
        }
        return n;
    }

    std::string parse_string() {
        ++i_;  // opening quote
        std::string out;
        while (true) {
            if (i_ >= s_.size()) fail("unterminated string");
            const char c = s_[i_];
            if (c == '"') { ++i_; return out; }
            if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
            if (c == '\\') {
                if (++i_ >= s_.size()) fail("truncated escape");
                const char e = s_[i_++];
                switch (e) {
                    case '"': out += '"'; break;
                    case '\\': out += '\\'; break;
                    case '/': out += '/'; break;
                    case 'b': out += '\b'; break;
                    case 'f': out += '\f'; break;
                    case 'n': out += '\n'; break;
                    case 'r': out += '\r'; break;
                    case 't': out += '\t'; break;
                    case 'u': {
                        uint32_t cp = hex4();
                        if (cp >= 0xD800 && cp <= 0xDBFF) {
                            if (i_ + 2 > s_.size() || s_[i_] != '\\' || s_[i_ + 1] != 'u') fail("lone high surrogate");
                            i_ += 2;
                            const uint32_t lo = hex4();
                            if (lo < 0xDC00 || lo > 0xDFFF) fail("bad low surrogate");
                            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                            fail("lone low surrogate");
                        }
                        put_utf8(out, cp);
                        break;
                    }
                    default: fail(std::string("bad escape '\\") + e + "'");
                }
                continue;
            }
            const size_t n = utf8_len();
            if (n == 0) fail("invalid UTF-8 in string");
            out.append(s_, i_, n);
            i_ += n;
        }
    }

    Value parse_number() {
        const size_t start = i_;
        bool is_float = false;
        if (s_[i_] == '-') ++i_;
        if (i_ >= s_.size()) fail("truncated number");
        if (s_[i_] == '0') ++i_;
        else if (s_[i_] >= '1' && s_[i_] <= '9') while (i_ < s_.size() && isdigit(s_[i_])) ++i_;
        else fail("bad number");
        if (i_ < s_.size() && s_[i_] == '.') {
            is_float = true;
            ++i_;
            if (i_ >= s_.size() || !isdigit(s_[i_])) fail("bad fraction");
            while (i_ < s_.size() && isdigit(s_[i_])) ++i_;
        }
        if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
            is_float = true;
            ++i_;
            if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
            if (i_ >= s_.size() || !isdigit(s_[i_])) fail("bad exponent");
            while (i_ < s_.size() && isdigit(s_[i_])) ++i_;
        }
        const std::string text = s_.substr(start, i_ - start);
        if (!is_float) {
            // exact int64, or an error (sizes and offsets must never be silently rounded)
            errno = 0;
            char* end = nullptr;
            const long long v = std::strtoll(text.c_str(), &end, 10);
            if (errno == ERANGE) fail("integer " + text + " does not fit in 64 bits");
            return Value(int64_t(v));
        }
        const double d = std::strtod(text.c_str(), nullptr);
        if (!std::isfinite(d)) fail("number " + text + " is out of the range of a double");
        return Value(d);
    }
    static bool isdigit(char c) { return c >= '0' && c <= '9'; }

    const std::string& s_;
    size_t i_ = 0;
};

inline void write_string(std::string& out, const std::string& s) {
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += char(c);
                }
        }
    }
    out += '"';
}

inline void write_value(std::string& out, const Value& v) {
    if (v.is_null()) out += "null";
    else if (v.is_bool()) out += v.as_bool() ? "true" : "false";
    else if (v.is_int()) out += std::to_string(v.as_int());
    else if (std::holds_alternative<double>(v.v)) {
        const double d = std::get<double>(v.v);
        MOEKD_CHECK(std::isfinite(d), "json: cannot write the non-finite number ", d);
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.17g", d);
        out += buf;
        if (std::string(buf).find_first_of(".eE") == std::string::npos) out += ".0";  // stays a double (-0.0 too)
    } else if (v.is_string()) write_string(out, v.as_string());
    else if (v.is_array()) {
        out += '[';
        bool first = true;
        for (auto& x : v.as_array()) {
            if (!first) out += ',';
            first = false;
            write_value(out, x);
        }
        out += ']';
    } else {
        out += '{';
        bool first = true;
        for (auto& [k, x] : v.as_object()) {
            if (!first) out += ',';
            first = false;
            write_string(out, k);
            out += ':';
            write_value(out, x);
        }
        out += '}';
    }
}

}  // namespace detail

/// Parses a complete JSON text; any defect is a moekd::Error with the byte position.
inline Value parse(const std::string& text) { return detail::Parser(text).parse_document(); }

/// Compact JSON text of a value.
inline std::string dump(const Value& v) {
    std::string out;
    detail::write_value(out, v);
    return out;
}

}  // namespace moekd::json

// safetensors.hpp — read and write the safetensors format, so other tools (Python's
// `safetensors`, PyTorch, HF) read our weights and we read theirs.
//
// Layout: 8-byte little-endian header length N; N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// (padded with spaces to a multiple of 8); then the data buffer, offsets relative to its start.
// The reader trusts nothing: header length against the file size and a 100 MB cap, strict JSON,
// known dtypes, non-negative shapes, byte counts that match the shape, offsets inside the buffer,
// no overlaps and no holes (as the reference implementation requires). Any defect is a
// moekd::Error naming the file and the tensor, never an out-of-bounds read.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "../core/tensor.hpp"
#include "atomic_file.hpp"
#include "json.hpp"

namespace moekd::io {

/// One tensor as stored: dtype tag, shape, raw little-endian bytes.
struct RawTensor {
    std::string dtype;  // "F32", "F64", "F16", "BF16", "I64", "I32", "U8", "BOOL", ...
    Shape shape;
    std::vector<uint8_t> bytes;
};

struct SafetensorsFile {
    std::map<std::string, RawTensor> tensors;
    std::map<std::string, std::string> metadata;
};

inline size_t dtype_size(const std::string& dt) {
    if (dt == "F64" || dt == "I64" || dt == "U64") return 8;
    if (dt == "F32" || dt == "I32" || dt == "U32") return 4;
    if (dt == "F16" || dt == "BF16" || dt == "I16" || dt == "U16") return 2;
    if (dt == "U8" || dt == "I8" || dt == "BOOL" || dt == "F8_E4M3" || dt == "F8_E5M2") return 1;
    return 0;
}

template <class T> constexpr const char* safetensors_dtype() {
    if constexpr (std::is_same_v<T, float>) return "F32";
    else if constexpr (std::is_same_v<T, double>) return "F64";
    else if constexpr (std::is_same_v<T, int64_t>) return "I64";
    else if constexpr (std::is_same_v<T, int32_t>) return "I32";
    else if constexpr (std::is_same_v<T, uint8_t>) return "U8";
    else if constexpr (std::is_same_v<T, bf16>) return "BF16";
    else if constexpr (std::is_same_v<T, half>) return "F16";
    else static_assert(sizeof(T) == 0, "no safetensors dtype for this element type");
}

/// Parses safetensors bytes already in memory. `name` is used in error messages (file path).
inline SafetensorsFile parse_safetensors(const uint8_t* data, size_t size, const std::string& name) {
    MOEKD_CHECK(size >= 8, "safetensors: '", name, "' is ", size, " bytes, too short for the 8-byte header length");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
    MOEKD_CHECK(n <= 100u * 1000 * 1000, "safetensors: '", name, "' declares a header of ", n,
                " bytes (over the 100 MB limit; corrupt file?)");
    MOEKD_CHECK(n <= size - 8, "safetensors: '", name, "' declares a header of ", n, " bytes but the file has only ",
                size - 8, " bytes after the length (truncated?)");
    const std::string_view header(reinterpret_cast<const char*>(data + 8), n);
    json::Value root;
    try {
        root = json::parse(header);
    } catch (const Error& e) {
        throw Error(msg("safetensors: '", name, "' has a header that is not valid JSON (", e.what(), ")"));
    }
    MOEKD_CHECK(root.is_object(), "safetensors: '", name, "': the header is not a JSON object");
    const uint8_t* buf = data + 8 + n;
    const uint64_t buf_size = size - 8 - n;

    SafetensorsFile out;
    struct Span { uint64_t b, e; std::string name; };
    std::vector<Span> spans;
    for (auto& [key, v] : root.get_ref<const json::Object&>()) {
        if (key == "__metadata__") {
            MOEKD_CHECK(v.is_object(), "safetensors: '", name, "': __metadata__ must be an object of strings");
            for (auto& [mk, mv] : v.get_ref<const json::Object&>()) {
                MOEKD_CHECK(mv.is_string(), "safetensors: '", name, "': metadata '", mk, "' is not a string");
                out.metadata[mk] = mv.get<std::string>();
            }
            continue;
        }
        auto where = [&, &key = key](const std::string& what) { return msg("safetensors: '", name, "', tensor '", key, "': ", what); };
        MOEKD_CHECK(v.is_object(), where("entry is not an object"));
        const json::Value* dt = json::find(v, "dtype");
        const json::Value* sh = json::find(v, "shape");
        const json::Value* off = json::find(v, "data_offsets");
        MOEKD_CHECK(dt && dt->is_string(), where("missing or non-string dtype"));
        MOEKD_CHECK(sh && sh->is_array(), where("missing or non-array shape"));
        MOEKD_CHECK(off && off->is_array() && off->size() == 2, where("data_offsets must be [begin, end]"));
        RawTensor t;
        t.dtype = dt->get<std::string>();
        const size_t es = dtype_size(t.dtype);
        MOEKD_CHECK(es > 0, where("unknown dtype '" + t.dtype + "'"));
        uint64_t count = 1, nonzero = 1;  // nonzero: product of the non-zero sizes (strides must fit)
        for (auto& d : *sh) {
            // json::parse keeps integers exact as int64 (a larger one is an error there)
            MOEKD_CHECK(d.is_number_integer() && d.get<int64_t>() >= 0, where("shape entries must be non-negative integers"));
            const uint64_t di = uint64_t(d.get<int64_t>());
            MOEKD_CHECK(di == 0 || nonzero <= (uint64_t(1) << 62) / di, where("shape is absurdly large"));
            count *= di;
            if (di) nonzero *= di;
            t.shape.push_back(d.get<int64_t>());
        }
        const json::Value &o0 = (*off)[0], &o1 = (*off)[1];
        MOEKD_CHECK(o0.is_number_integer() && o1.is_number_integer() && o0.get<int64_t>() >= 0 &&
                        o1.get<int64_t>() >= o0.get<int64_t>(),
                    where("data_offsets must be non-negative integers with begin <= end"));
        const uint64_t b = uint64_t(o0.get<int64_t>()), e = uint64_t(o1.get<int64_t>());
        MOEKD_CHECK(e <= buf_size, where(msg("data_offsets [", b, ", ", e, ") run past the data buffer of ", buf_size,
                                             " bytes (truncated file?)")));
        MOEKD_CHECK(count <= (uint64_t(1) << 60) && e - b == count * es,
                    where(msg("shape ", t.shape, " of ", t.dtype, " needs ", count * es, " bytes but data_offsets span ",
                              e - b)));
        t.bytes.assign(buf + b, buf + e);
        spans.push_back({b, e, key});
        out.tensors.emplace(key, std::move(t));
    }
    std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) { return x.b < y.b || (x.b == y.b && x.e < y.e); });
    uint64_t at = 0;
    for (auto& s : spans) {
        MOEKD_CHECK(s.b >= at, "safetensors: '", name, "': tensor '", s.name, "' overlaps the tensor before it (offset ",
                    s.b, " < ", at, ")");
        MOEKD_CHECK(s.b == at, "safetensors: '", name, "': a hole of ", s.b - at, " bytes before tensor '", s.name, "'");
        at = s.e;
    }
    MOEKD_CHECK(at == buf_size, "safetensors: '", name, "': ", buf_size - at, " bytes at the end belong to no tensor");
    return out;
}

inline SafetensorsFile read_safetensors(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    MOEKD_CHECK(f, "safetensors: cannot open '", path, "'");
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    return parse_safetensors(bytes.data(), bytes.size(), path);
}

/// Converts a stored tensor to Tensor<T>. Floating types convert among F64/F32/F16/BF16;
/// integers among I64/I32/U8/BOOL; mixing the two kinds is an error naming the tensor.
template <class T>
Tensor<T> to_tensor(const RawTensor& r, const std::string& name) {
    Tensor<T> t = Tensor<T>::empty(r.shape);
    const int64_t n = t.numel();
    T* out = t.data();
    auto load = [&](auto tag) {
        using S = decltype(tag);
        for (int64_t i = 0; i < n; ++i) {
            S s;
            std::memcpy(&s, r.bytes.data() + i * sizeof(S), sizeof(S));
            if constexpr (std::is_same_v<S, bf16> || std::is_same_v<S, half>) out[i] = static_cast<T>(static_cast<float>(s));
            else out[i] = static_cast<T>(s);
        }
    };
    constexpr bool fl = std::is_floating_point_v<T>;
    const std::string& d = r.dtype;
    if (fl && d == "F32") load(float{});
    else if (fl && d == "F64") load(double{});
    else if (fl && d == "F16") load(half{});
    else if (fl && d == "BF16") load(bf16{});
    else if (!fl && d == "I64") load(int64_t{});
    else if (!fl && d == "I32") load(int32_t{});
    else if (!fl && (d == "U8" || d == "BOOL")) load(uint8_t{});
    else MOEKD_CHECK(false, "safetensors: tensor '", name, "' is stored as ", d, " and cannot be read as ", dtype_name<T>());
    return t;
}

/// Serialises tensors (any strides; written contiguous) and metadata to safetensors bytes.
template <class T>
std::vector<uint8_t> serialize_safetensors(const std::map<std::string, Tensor<T>>& tensors,
                                           const std::map<std::string, std::string>& metadata = {}) {
    json::Value header = json::Value::object();  // metadata first, then the tensors in name order
    if (!metadata.empty()) header["__metadata__"] = metadata;
    uint64_t at = 0;
    for (auto& [name, t] : tensors) {
        MOEKD_CHECK(name != "__metadata__", "safetensors: a tensor cannot be named __metadata__ (the header's metadata entry)");
        const uint64_t bytes = uint64_t(t.numel()) * sizeof(T);
        header[name] = {{"dtype", safetensors_dtype<T>()}, {"shape", t.shape()}, {"data_offsets", {at, at + bytes}}};
        at += bytes;
    }
    std::string h = json::dump(header);
    while (h.size() % 8) h += ' ';
    std::vector<uint8_t> out(8 + h.size() + at);
    const uint64_t n = h.size();
    for (int i = 0; i < 8; ++i) out[i] = uint8_t(n >> (8 * i));
    std::memcpy(out.data() + 8, h.data(), h.size());
    uint8_t* p = out.data() + 8 + h.size();
    for (auto& [name, t] : tensors) {
        const Tensor<T> c = moekd::detail::contiguous_data(t.to(Device::CPU));  // device tensors: copied back
        std::memcpy(p, c.data(), size_t(c.numel()) * sizeof(T));
        p += size_t(c.numel()) * sizeof(T);
    }
    return out;
}

/// Writes atomically: a kill at any moment leaves either the old file or the new one.
template <class T>
void write_safetensors(const std::string& path, const std::map<std::string, Tensor<T>>& tensors,
                       const std::map<std::string, std::string>& metadata = {}) {
    write_file_atomic(path, serialize_safetensors(tensors, metadata));
}

/// Reads every tensor as Tensor<T> (converting dtypes as to_tensor does).
template <class T>
std::map<std::string, Tensor<T>> load_safetensors(const std::string& path,
                                                  std::map<std::string, std::string>* metadata = nullptr) {
    SafetensorsFile f = read_safetensors(path);
    std::map<std::string, Tensor<T>> out;
    for (auto& [name, r] : f.tensors) out.emplace(name, to_tensor<T>(r, name));
    if (metadata) *metadata = f.metadata;
    return out;
}

}  // namespace moekd::io

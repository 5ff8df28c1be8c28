// interop_io.cpp — the C++ half of the safetensors interop proof (tests/interop/interop.py is the
// Python half, using the reference `safetensors` package):
//   interop_io write <dir>               writes files of many dtypes/shapes + <dir>/cpp_expected.txt
//   interop_io check <file> <expected>   reads a file (written by Python) and checks every value
// Expected-value side format, one entry per line (floats as C99 hex floats, so exact):
//   tensor <file> <name> <dtype> <rank> <dims...> <count> <values...>
//   meta <file> <key> <value as hex bytes>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#include <moekd/io/checkpoint.hpp>
#include <moekd/io/safetensors.hpp>
#include <moekd/optim/optimizers.hpp>

using namespace moekd;

namespace {

std::string hexbytes(const std::string& s) {
    std::string out;
    char b[3];
    for (unsigned char c : s) std::snprintf(b, sizeof b, "%02x", c), out += b;
    return out.empty() ? "-" : out;
}
std::string unhex(const std::string& h) {
    std::string out;
    if (h == "-") return out;
    for (size_t i = 0; i + 1 < h.size(); i += 2) out += char(std::stoi(h.substr(i, 2), nullptr, 16));
    return out;
}
std::string fmt_double(double d) {
    char b[64];
    std::snprintf(b, sizeof b, "%a", d);
    return b;
}

/// Collects expected values as it builds tensors.
struct Expect {
    std::ostringstream out;
    template <class V>
    void tensor(const std::string& file, const std::string& name, const std::string& dtype, const Shape& shape,
                const std::vector<V>& values) {
        out << "tensor " << file << " " << name << " " << dtype << " " << shape.size();
        for (auto d : shape) out << " " << d;
        out << " " << values.size();
        for (auto v : values) {
            if constexpr (std::is_floating_point_v<V>) out << " " << fmt_double(double(v));
            else out << " " << std::to_string(v);
        }
        out << "\n";
    }
    void meta(const std::string& file, const std::map<std::string, std::string>& m) {
        for (auto& [k, v] : m) out << "meta " << file << " " << hexbytes(k) << " " << hexbytes(v) << "\n";
    }
};

template <class V>
io::detail::RawView view(const std::string& dtype, const Shape& s, const std::vector<V>& v) {
    return {dtype, s, reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(V)};
}

int write_all(const std::string& dir) {
    Expect ex;
    const float finf = std::numeric_limits<float>::infinity();
    const double dinf = std::numeric_limits<double>::infinity();
    // ---- a mixed-dtype file through the raw writer the checkpoints use
    std::vector<float> f32 = {1.0f, -0.0f, 0.1f, 1e-40f /* subnormal */, std::numeric_limits<float>::max(), -finf};
    for (int i = 0; i < 6; ++i) f32.push_back(std::sin(float(i)) * 3.0f);
    std::vector<double> f64 = {0.1, -1e-310 /* subnormal */, std::numeric_limits<double>::max(), dinf, M_PI, std::nan("")};
    std::vector<int64_t> i64 = {INT64_MIN, -1, 0, 1, INT64_MAX};
    std::vector<int32_t> i32 = {INT32_MIN, -7, 0, INT32_MAX};
    std::vector<uint8_t> u8 = {0, 1, 127, 128, 255};
    std::vector<float> f16_vals = {0.5f, -2.0f, 65504.0f, 5.960464477539063e-08f /* smallest subnormal */, 1.0009765625f};
    std::vector<half> f16;
    for (float v : f16_vals) f16.push_back(half(v));
    std::vector<float> f16_back;
    for (auto h : f16) f16_back.push_back(static_cast<float>(h));
    std::vector<float> scalar = {42.5f}, empty;
    std::map<std::string, io::detail::RawView> views{
        {"f32", view("F32", {3, 4}, f32)},       {"f64", view("F64", {6}, f64)},
        {"i64", view("I64", {5, 1}, i64)},       {"i32", view("I32", {2, 2}, i32)},
        {"u8", view("U8", {5}, u8)},             {"f16", view("F16", {5}, f16)},
        {"scalar", view("F32", {}, scalar)},     {"empty", view("F32", {0, 3}, empty)},
    };
    std::map<std::string, std::string> meta{{"format", "pt"}, {"note", "caf\xc3\xa9 \"quoted\"\n\ttab"}, {"empty", ""}};
    io::write_file_atomic(dir + "/cpp_mixed.safetensors", io::detail::serialize_raw(views, meta));
    const std::string mf = "cpp_mixed.safetensors";
    ex.tensor(mf, "f32", "F32", {3, 4}, f32);
    ex.tensor(mf, "f64", "F64", {6}, f64);
    ex.tensor(mf, "i64", "I64", {5, 1}, i64);
    ex.tensor(mf, "i32", "I32", {2, 2}, i32);
    ex.tensor(mf, "u8", "U8", {5}, u8);
    ex.tensor(mf, "f16", "F16", {5}, f16_back);
    ex.tensor(mf, "scalar", "F32", {}, scalar);
    ex.tensor(mf, "empty", "F32", {0, 3}, empty);
    ex.meta(mf, meta);

    // ---- the typed public writer: F32 (incl. a transposed view, written contiguous), F64, I64
    Generator g(7);
    auto w = Tensor<float>::randn({3, 5}, g);
    std::map<std::string, Tensor<float>> tf{{"w", w}, {"wt", w.t()}, {"s", Tensor<float>::scalar(-3.25f)},
                                            {"e", Tensor<float>::zeros({2, 0})}};
    io::write_safetensors(dir + "/cpp_f32.safetensors", tf, {{"step", "7"}});
    for (auto& [n, t] : tf) ex.tensor("cpp_f32.safetensors", n, "F32", t.shape(), t.to_vector());
    ex.meta("cpp_f32.safetensors", {{"step", "7"}});
    std::map<std::string, Tensor<double>> td{{"x", Tensor<double>::randn({2, 3, 4}, g)}};
    io::write_safetensors(dir + "/cpp_f64.safetensors", td);
    ex.tensor("cpp_f64.safetensors", "x", "F64", {2, 3, 4}, td["x"].to_vector());
    std::map<std::string, Tensor<int64_t>> ti{{"ids", Tensor<int64_t>::randint(-1000000000000LL, 1000000000000LL, {7}, g)}};
    io::write_safetensors(dir + "/cpp_i64.safetensors", ti);
    ex.tensor("cpp_i64.safetensors", "ids", "I64", {7}, ti["ids"].to_vector());

    // ---- a full training checkpoint (model, Adam state, a generator mid Box-Muller pair)
    struct Tiny : nn::Module<float> {
        Tiny(Generator& g) {
            register_parameter("w", Tensor<float>::randn({2, 3}, g));
            register_parameter("b", Tensor<float>::randn({3}, g));
        }
    } model(g);
    optim::Adam<float> opt({{model.parameters(), 1e-2, 0.0}});
    for (auto& p : model.parameters()) p.set_grad(Tensor<float>::ones(p.shape()));
    opt.step();
    g.normal();
    io::TrainState st;
    st.step = 1;
    st.config = "{\"lr\": 0.01}";
    st.extra["schedule"] = "constant";
    io::save_checkpoint<float>(dir + "/cpp_checkpoint.safetensors", model, &opt, {{"g", &g}}, st);
    const std::string cf = "cpp_checkpoint.safetensors";
    for (auto& [n, t] : model.state_dict()) ex.tensor(cf, "model." + n, "F32", t.shape(), t.to_vector());
    for (auto& [n, t] : opt.state_dict()) ex.tensor(cf, "optim." + n, "F32", t.shape(), t.to_vector());
    const auto gs = g.state();
    ex.tensor(cf, "rng.g", "U64", {6},
              std::vector<uint64_t>{gs.s[0], gs.s[1], gs.s[2], gs.s[3], uint64_t(gs.has_spare), std::bit_cast<uint64_t>(gs.spare)});
    ex.meta(cf, {{"format", "moekd.checkpoint"}, {"step", "1"}, {"config", st.config}, {"extra.schedule", "constant"}});

    // ---- BF16 (bf16 tensors, as a bf16 run may save them): bf16_torch.py reads it with
    // safetensors.torch and compares the bits in cpp_bf16_bits.txt (numpy has no bfloat16)
    {
        const std::vector<float> vals{1.0f, -2.5f, 3.14159265f, 1e-3f, -0.0f, finf, -finf, 65504.0f, 1e30f, 1.17549435e-38f,
                                      std::numeric_limits<float>::quiet_NaN(), 0.1f};
        Tensor<bf16> b = Tensor<bf16>::empty({3, 4});
        std::ofstream bits(dir + "/cpp_bf16_bits.txt");
        for (size_t i = 0; i < vals.size(); ++i) {
            b.data()[i] = bf16(vals[i]);
            bits << b.data()[i].bits << (i + 1 < vals.size() ? " " : "\n");
        }
        io::write_safetensors(dir + "/cpp_bf16.safetensors", std::map<std::string, Tensor<bf16>>{{"b", b}});
        if (!bits) return 1;
    }

    std::ofstream f(dir + "/cpp_expected.txt");
    f << ex.out.str();
    std::printf("wrote 6 safetensors files and cpp_expected.txt to %s\n", dir.c_str());
    return f ? 0 : 1;
}

bool same(double a, double b) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
    return a == b && std::signbit(a) == std::signbit(b);
}

int check(const std::string& path, const std::string& expected) {
    io::SafetensorsFile f = io::read_safetensors(path);
    std::ifstream in(expected);
    if (!in) {
        std::fprintf(stderr, "cannot open %s\n", expected.c_str());
        return 1;
    }
    int bad = 0, tensors = 0, values = 0, metas = 0;
    size_t expected_tensors = 0;
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream ls(line);
        std::string kind, file, name;
        ls >> kind >> file;
        if (kind == "meta") {
            std::string k, v;
            ls >> k >> v;
            ++metas;
            auto it = f.metadata.find(unhex(k));
            if (it == f.metadata.end() || it->second != unhex(v)) {
                std::printf("MISMATCH metadata '%s'\n", unhex(k).c_str());
                ++bad;
            }
            continue;
        }
        ls >> name;
        std::string dtype;
        size_t rank = 0, count = 0;
        ls >> dtype >> rank;
        Shape shape(rank);
        for (auto& d : shape) ls >> d;
        ls >> count;
        ++expected_tensors;
        auto it = f.tensors.find(name);
        if (it == f.tensors.end()) {
            std::printf("MISSING tensor '%s'\n", name.c_str());
            ++bad;
            continue;
        }
        ++tensors;
        const io::RawTensor& r = it->second;
        if (r.dtype != dtype || r.shape != shape) {
            std::printf("MISMATCH '%s': %s %s vs expected %s\n", name.c_str(), r.dtype.c_str(), msg(r.shape).c_str(),
                        msg(shape).c_str());
            ++bad;
            continue;
        }
        const bool fl = dtype[0] == 'F' || dtype == "BF16";
        if (fl) {
            auto t = io::to_tensor<double>(r, name).to_vector();
            for (size_t i = 0; i < count; ++i) {
                std::string tok;
                ls >> tok;
                const double want = std::strtod(tok.c_str(), nullptr);
                ++values;
                if (i >= t.size() || !same(t[i], want)) {
                    std::printf("MISMATCH '%s'[%zu]: %a vs expected %a\n", name.c_str(), i, i < t.size() ? t[i] : 0.0, want);
                    ++bad;
                }
            }
        } else {
            auto t = io::to_tensor<int64_t>(r, name).to_vector();
            for (size_t i = 0; i < count; ++i) {
                long long want = 0;
                ls >> want;
                ++values;
                if (i >= t.size() || t[i] != want) {
                    std::printf("MISMATCH '%s'[%zu]\n", name.c_str(), i);
                    ++bad;
                }
            }
        }
    }
    if (f.tensors.size() != expected_tensors) {
        std::printf("MISMATCH: the file has %zu tensors, expected %zu\n", f.tensors.size(), expected_tensors);
        ++bad;
    }
    std::printf("%s: %d tensors, %d values, %d metadata entries checked, %d mismatches\n", path.c_str(), tensors, values,
                metas, bad);
    return bad ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const std::string mode = argc > 1 ? argv[1] : "";
        if (mode == "write" && argc == 3) return write_all(argv[2]);
        if (mode == "check" && argc == 4) return check(argv[2], argv[3]);
        std::fprintf(stderr, "usage: interop_io write <dir> | interop_io check <file> <expected.txt>\n");
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "interop_io: %s\n", e.what());
        return 1;
    }
}

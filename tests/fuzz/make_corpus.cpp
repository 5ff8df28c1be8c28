// make_corpus.cpp — writes the fuzzers' seed corpora (tiny valid inputs) at build/test time, so
// the seeds always follow the current formats:  fuzz_make_corpus <dir>
//   <dir>/safetensors/*  <dir>/json/*  <dir>/checkpoint/*
#include <filesystem>
#include <fstream>

#include <moekd/io/checkpoint.hpp>
#include <moekd/optim/optimizers.hpp>

using namespace moekd;

static void put(const std::filesystem::path& p, const std::string& s) {
    std::ofstream(p, std::ios::binary) << s;
}

int main(int argc, char** argv) {
    if (argc != 2) return 2;
    namespace fs = std::filesystem;
    const fs::path d = argv[1];
    for (auto sub : {"safetensors", "json", "checkpoint"}) fs::create_directories(d / sub);
    Generator g(3);
    // safetensors: mixed dtypes, 0-d, empty, metadata
    io::write_safetensors((d / "safetensors/f32.st").string(),
                          std::map<std::string, Tensor<float>>{{"w", Tensor<float>::randn({2, 3}, g)},
                                                               {"s", Tensor<float>::scalar(1.5f)},
                                                               {"e", Tensor<float>::zeros({0, 2})}},
                          {{"format", "pt"}});
    io::write_safetensors((d / "safetensors/i64.st").string(),
                          std::map<std::string, Tensor<int64_t>>{{"ids", Tensor<int64_t>::arange(3)}});
    std::vector<uint16_t> h = {0x3c00, 0x8000, 0x7bff};
    std::vector<uint8_t> b = {1, 0};
    io::write_file_atomic((d / "safetensors/mixed.st").string(),
                          io::detail::serialize_raw({{"h", {"F16", {3}, reinterpret_cast<const uint8_t*>(h.data()), 6}},
                                                     {"bf", {"BF16", {1, 3}, reinterpret_cast<const uint8_t*>(h.data()), 6}},
                                                     {"m", {"BOOL", {2}, b.data(), 2}}},
                                                    {{"k", "v\u00e9"}}));
    // json
    put(d / "json/object.json", R"({"a": [1, -2.5e3, true, false, null], "b": {"c": "x\u00e9\ud83d\ude00\n"}})");
    put(d / "json/numbers.json", "[0, -0, 9223372036854775807, -9223372036854775808, 1.5e-300, 0.1]");
    put(d / "json/string.json", "\"tab\\t quote\\\" slash\\/ \\u0000\"");
    // checkpoints: with and without optimizer state
    struct Tiny : nn::Module<float> {
        explicit Tiny(Generator& g) { register_parameter("w", Tensor<float>::randn({2}, g)); }
    } model(g);
    optim::SGD<float> opt({{model.parameters(), 0.1, 0.0}}, 0.9);
    model.parameters()[0].set_grad(Tensor<float>::ones({2}));
    opt.step();
    g.normal();
    io::TrainState st;
    st.step = 1;
    st.config = "{}";
    st.extra["k"] = "v";
    io::save_checkpoint<float>((d / "checkpoint/sgd.ckpt").string(), model, &opt, {{"g", &g}}, st);
    io::save_checkpoint<float>((d / "checkpoint/model_only.ckpt").string(), model, nullptr, {}, io::TrainState{});
    return 0;
}

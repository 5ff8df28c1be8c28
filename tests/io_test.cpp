// io_test.cpp — the JSON reader, safetensors round trips, and every kind of broken file.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <moekd/io/safetensors.hpp>
#include <moekd/tensor.hpp>

using namespace moekd;
using Catch::Contains;

namespace {
std::string tmp(const std::string& name) {
    return (std::filesystem::temp_directory_path() / ("moekd_io_" + name)).string();
}
std::vector<uint8_t> with_header(const std::string& header, size_t data_bytes) {
    std::vector<uint8_t> b(8 + header.size() + data_bytes, 0);
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) b[i] = uint8_t(n >> (8 * i));
    std::memcpy(b.data() + 8, header.data(), header.size());
    return b;
}
io::SafetensorsFile parse(const std::vector<uint8_t>& b) { return io::parse_safetensors(b.data(), b.size(), "test.st"); }
}  // namespace

TEST_CASE("json parses and writes strictly", "[io][json]") {
    auto v = json::parse(R"({"a": [1, -2, 3.5e2, true, null], "b": {"c": "x\u00e9\ud83d\ude00\n"}})");
    CHECK(v.at("a").at(1).get<int64_t>() == -2);
    CHECK(v.at("a").at(2).get<double>() == 350.0);
    CHECK(v.at("b").at("c").get<std::string>() == "x\xc3\xa9\xf0\x9f\x98\x80\n");
    CHECK(json::dump(json::parse(json::dump(v))) == json::dump(v));
    CHECK(json::dump(json::parse(R"({"z": 1, "a": [2.0, -0.0], "m": "\u0001"})")) == R"({"z":1,"a":[2.0,-0.0],"m":"\u0001"})");
    // integers are exact int64, stored signed whatever their sign; anything else is an error
    CHECK(json::parse("9223372036854775807").get<int64_t>() == INT64_MAX);
    CHECK(json::parse("-9223372036854775808").get<int64_t>() == INT64_MIN);
    CHECK_FALSE(json::parse("[7]").at(0).is_number_unsigned());
    CHECK(json::parse("1e300").is_number_float());
    for (const char* big : {"9223372036854775808", "-9223372036854775809", "99999999999999999999", "[0, 18446744073709551616]"})
        CHECK_THROWS_WITH(json::parse(big), Contains("does not fit in int64"));
    for (const char* bad : {"{", "[1,]", "{\"a\":1,}", "01", "1.", "\"\\x\"", "tru", "[1] 2", "{\"a\":1,\"a\":2}",
                            "\"\xff\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\\ud800\"", "\"\\udc00\"", "99999999999999999999",
                            "\"a\nb\"", "", " ", "[1, 2", "{\"a\" 1}", "'a'", "NaN", "-Infinity", "1e400", "/* c */ 1", "1 // c",
                            "[1,] ", "\xEF\xBB\xBF{}", "{} {}"}) {
        INFO(bad);
        CHECK_THROWS_AS(json::parse(bad), Error);
    }
    CHECK_THROWS_AS(json::parse(std::string("\"a\0b\"", 5)), Error);  // a raw NUL inside a string
    CHECK_THROWS_WITH(json::parse("{\"a\":1,\"a\":2}"), Contains("json: duplicate key 'a'"));
    CHECK_THROWS_WITH(json::parse(R"({"x": [{"b": 1, "c": {"b": 0}, "b": 3}]})"), Contains("duplicate key 'b' in the object at /x/0"));
    CHECK_THROWS_WITH(json::parse("[1] 2"), Contains("expected end of input"));
    CHECK_THROWS_WITH(json::parse("\"\xc0\xaf\""), Contains("UTF-8"));
    CHECK_THROWS_WITH(json::parse("[1,]"), Contains("line 1, column 4"));
    CHECK_THROWS_WITH(json::parse("\xEF\xBB\xBF{}"), Contains("byte order mark"));
    // nesting: 64 levels of arrays and objects parse, 65 do not (a hostile header cannot make dump or == recurse deeply)
    CHECK(json::parse(std::string(64, '[') + std::string(64, ']')).is_array());
    CHECK_THROWS_WITH(json::parse(std::string(65, '[') + std::string(65, ']')), Contains("nesting deeper than 64"));
    CHECK_THROWS_WITH(json::parse(std::string(100, '[') + std::string(100, ']')), Contains("nesting"));
    std::string deep_objects;
    for (int i = 0; i < 65; ++i) deep_objects += "{\"k\":";
    CHECK_THROWS_WITH(json::parse(deep_objects + "1" + std::string(65, '}')), Contains("nesting"));

    // writing: compact, insertion order, doubles stay doubles; what JSON cannot hold is an error
    CHECK(json::dump({{"n", nullptr}, {"d", 2.0}, {"i", -3}, {"s", "a\"\n"}, {"e", json::Value::object()}}) ==
          R"({"n":null,"d":2.0,"i":-3,"s":"a\"\n","e":{}})");
    CHECK(json::dump({{"a", 1}, {"b", {1, 2}}}, 2) == "{\n  \"a\": 1,\n  \"b\": [\n    1,\n    2\n  ]\n}");
    CHECK_THROWS_WITH(json::dump({{"x", {1.0, std::nan("")}}}), Contains("non-finite number nan at /x/1"));
    CHECK_THROWS_WITH(json::dump(json::Value("\xff")), Contains("UTF-8"));

    // typed reads name what they read, as moekd::Error (never a nlohmann exception)
    CHECK(json::find(v, "a") == &v.at("a"));
    CHECK(json::find(v, "nope") == nullptr);
    CHECK(json::find(json::parse("[1]"), "a") == nullptr);
    CHECK(json::get_int(json::parse("12"), "n") == 12);
    CHECK_THROWS_WITH(json::get_int(json::parse("1.5"), "shape"), Contains("json: shape must be an integer, got 1.5"));
    CHECK_THROWS_WITH(json::get_string(json::parse("[1]"), "file"), Contains("json: file must be a string, got [1]"));
    CHECK_THROWS_WITH(json::get_object(json::parse("[1]"), "tensors"), Contains("tensors must be an object, got array"));
    CHECK_THROWS_WITH(json::at(v, "nope"), Contains("missing key 'nope'"));
}

TEST_CASE("safetensors round-trips tensors and metadata", "[io][safetensors]") {
    Generator g(1);
    std::map<std::string, Tensor<float>> m{{"w", Tensor<float>::randn({3, 4}, g)},
                                           {"b", Tensor<float>::randn({4}, g)},
                                           {"empty", Tensor<float>::zeros({0, 3})},
                                           {"s", Tensor<float>::scalar(2.5f)}};
    m["wt"] = m["w"].t();  // non-contiguous: written contiguous
    io::write_safetensors(tmp("rt.safetensors"), m, {{"step", "7"}});
    std::map<std::string, std::string> meta;
    auto back = io::load_safetensors<float>(tmp("rt.safetensors"), &meta);
    CHECK(meta.at("step") == "7");
    REQUIRE(back.size() == m.size());
    for (auto& [k, t] : m) {
        CHECK(back.at(k).shape() == t.shape());
        CHECK(back.at(k).to_vector() == t.to_vector());
    }
    // float file read as double converts exactly; int64 round trip
    auto asd = io::load_safetensors<double>(tmp("rt.safetensors"));
    CHECK(asd.at("s").item() == 2.5);
    io::write_safetensors(tmp("ids.safetensors"), std::map<std::string, Tensor<int64_t>>{{"ids", Tensor<int64_t>::arange(5)}});
    CHECK(io::load_safetensors<int64_t>(tmp("ids.safetensors")).at("ids").to_vector() == std::vector<int64_t>{0, 1, 2, 3, 4});
    CHECK_THROWS_WITH(io::load_safetensors<float>(tmp("ids.safetensors")), Contains("'ids' is stored as I64"));
}

TEST_CASE("broken safetensors files are clear errors", "[io][safetensors][errors]") {
    const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    CHECK(parse(with_header(ok, 8)).tensors.at("a").shape == Shape{2});
    CHECK_THROWS_WITH(parse({1, 2, 3}), Contains("too short"));
    CHECK_THROWS_WITH(parse(with_header(ok, 4)), Contains("run past the data buffer"));  // truncated data
    auto huge = with_header(ok, 8);
    huge[5] = 0x7f;  // header length ~ 2^47
    CHECK_THROWS_WITH(parse(huge), Contains("100 MB"));
    auto longer = with_header(ok, 8);
    longer[0] = uint8_t(longer[0] + 40);  // header length past the end of the file
    CHECK_THROWS_WITH(parse(std::vector<uint8_t>(longer.begin(), longer.begin() + 60)), Contains("truncated"));
    CHECK_THROWS_WITH(parse(with_header("{not json", 0)), Contains("not valid JSON"));
    CHECK_THROWS_WITH(parse(with_header("[1,2]", 0)), Contains("not a JSON object"));
    // the strict JSON layer, seen through the reader: a duplicate tensor, an offset past int64,
    // a float offset or shape entry, a header nested too deeply
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                        R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8)),
                      Contains("not valid JSON") && Contains("duplicate key 'a'"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551624]}})", 8)),
                      Contains("not valid JSON") && Contains("does not fit in int64"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.0]}})", 8)),
                      Contains("non-negative integers with begin <= end"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8)),
                      Contains("shape entries must be non-negative integers"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F32","shape":)" + std::string(70, '[') + std::string(70, ']') + "}}", 0)),
                      Contains("not valid JSON") && Contains("nesting"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} x)", 8)),
                      Contains("not valid JSON"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8)),
                      Contains("unknown dtype 'F33'"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)),
                      Contains("needs 12 bytes but data_offsets span 8"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8)),
                      Contains("non-negative"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12)),
                      Contains("overlaps"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12)),
                      Contains("hole of 4 bytes"));
    CHECK_THROWS_WITH(parse(with_header(ok, 12)), Contains("belong to no tensor"));
    CHECK_THROWS_WITH(parse(with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8)),
                      Contains("begin <= end"));
    CHECK_THROWS_WITH(parse(with_header(R"({"__metadata__":{"k":1}})", 0)), Contains("metadata 'k' is not a string"));
    CHECK_THROWS_WITH(io::read_safetensors("/nonexistent.safetensors"), Contains("cannot open"));
}

TEST_CASE("an atomic write never leaves a half file behind", "[io]") {
    const std::string p = tmp("atomic.safetensors");
    io::write_safetensors(p, std::map<std::string, Tensor<float>>{{"x", Tensor<float>::ones({4})}});
    // a write into a folder that does not exist fails and leaves the old file as it was
    CHECK_THROWS_WITH(io::write_safetensors("/nonexistent/dir/x.safetensors",
                                            std::map<std::string, Tensor<float>>{{"x", Tensor<float>::ones({4})}}),
                      Contains("cannot create"));
    CHECK(io::load_safetensors<float>(p).at("x").numel() == 4);
    for (auto& e : std::filesystem::directory_iterator(std::filesystem::temp_directory_path()))
        CHECK(e.path().string().find("moekd_io_atomic.safetensors.tmp") == std::string::npos);
}

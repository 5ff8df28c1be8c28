// fuzz_checkpoint.cpp — libFuzzer target for parse_checkpoint (safetensors + checkpoint
// metadata, checksums, generator words, optimizer slots): a result or a moekd::Error, never a
// crash or undefined behaviour.
#include <moekd/io/checkpoint.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace moekd;
    try {
        auto ck = io::parse_checkpoint<float>(data, size, "fuzz.ckpt");
        (void)ck;
    } catch (const Error&) {
    }
    return 0;
}

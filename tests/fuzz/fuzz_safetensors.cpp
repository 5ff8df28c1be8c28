// fuzz_safetensors.cpp — libFuzzer target: any bytes given to parse_safetensors (and the dtype
// conversion load_safetensors does next) must give a result or a moekd::Error, never a crash,
// an out-of-bounds read, a leak or undefined behaviour (built with ASan + UBSan).
#include <moekd/io/safetensors.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace moekd;
    try {
        io::SafetensorsFile f = io::parse_safetensors(data, size, "fuzz.safetensors");
        for (auto& [name, r] : f.tensors) {
            // the parser promised: the bytes match the shape and dtype exactly
            if (uint64_t(numel(r.shape)) * io::dtype_size(r.dtype) != r.bytes.size()) __builtin_trap();
            try {
                (void)io::to_tensor<double>(r, name);
            } catch (const Error&) {
            }
            try {
                (void)io::to_tensor<int64_t>(r, name);
            } catch (const Error&) {
            }
        }
    } catch (const Error&) {
    }
    return 0;
}

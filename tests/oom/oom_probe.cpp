// oom_probe.cpp — runs out of memory the way a too-large model does: many tensors of assorted
// sizes are alive (activations, parameters) when building one more "expert" fails, and every one
// of them is destroyed while that exception unwinds the stack. run_oom.sh runs this under
// `ulimit -v`: the program must exit 1 with moekd's out-of-memory message (bytes, dtype, count),
// never abort (134, std::terminate from an allocation inside a destructor) or report a bare
// std::bad_alloc (exit 3).
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <moekd/tensor.hpp>

using namespace moekd;

namespace {
/// Experts of growing size, each filled (so the pages are really used), until memory runs out.
/// exhaust: when the next expert does not fit, fill what is left with small activations, so
/// that memory is gone entirely while everything is destroyed.
void build_experts(std::vector<Tensor<float>>& live, bool exhaust) {
    std::vector<Tensor<float>> experts;
    for (int64_t rows = 64;; rows = rows * 5 / 4 + 1) {
        if (exhaust) {
            try {
                experts.push_back(Tensor<float>::full({rows, 1024}, 0.5f));
            } catch (const std::exception&) {
                for (;;) live.push_back(Tensor<float>::full({4000}, 1.0f));
            }
            continue;
        }
        // many small temporaries of their own size classes, alive at the failure
        for (int i = 0; i < 64; ++i) live.push_back(Tensor<float>::full({rows % 997 + i * 13 + 1}, 1.0f));
        experts.push_back(Tensor<float>::full({rows, 1024}, 0.5f));
    }
}
}  // namespace

int main(int argc, char** argv) {
    const bool exhaust = argc > 1 && std::string(argv[1]) == "--exhaust";
    try {
        std::vector<Tensor<float>> live;
        live.reserve(1 << 19);
        build_experts(live, exhaust);
        std::printf("oom_probe: never ran out of memory\n");
        return 0;
    } catch (const Error& e) {
        std::fprintf(stderr, "oom_probe: %s\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "oom_probe: a bare %s escaped (not a moekd error)\n", e.what());
        return 3;
    }
}

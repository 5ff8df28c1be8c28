// trainer.cpp — the tiny trainer of tiny_trainer.hpp as a program, checkpointing after every
// step, so run_resume.sh can kill it with SIGKILL mid-training, resume it, and compare the final
// weights byte for byte with an uninterrupted run.
//   resume_trainer --dir D --steps N [--resume] [--sleep-ms M] [--out final.safetensors]
//                  [--keep K] [--break-resume]
// --break-resume forgets the dropout generator's state on resume (to prove the check is sharp).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "tiny_trainer.hpp"

int main(int argc, char** argv) {
    std::string dir, out;
    int64_t steps = 20, sleep_ms = 0;
    int keep = 3;
    bool resume = false, break_resume = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "resume_trainer: %s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--dir") dir = next();
        else if (a == "--steps") steps = std::stoll(next());
        else if (a == "--sleep-ms") sleep_ms = std::stoll(next());
        else if (a == "--out") out = next();
        else if (a == "--keep") keep = std::stoi(next());
        else if (a == "--resume") resume = true;
        else if (a == "--break-resume") break_resume = true;
        else {
            std::fprintf(stderr, "resume_trainer: unknown argument '%s'\n", a.c_str());
            return 2;
        }
    }
    if (dir.empty()) {
        std::fprintf(stderr, "usage: resume_trainer --dir D --steps N [--resume] [--sleep-ms M] [--out F]\n");
        return 2;
    }
    try {
        tiny::Config cfg;
        cfg.samples = 64;
        cfg.hidden = 32;
        tiny::Trainer t(cfg);
        if (resume) {
            const std::string last = moekd::io::latest_checkpoint(dir);
            if (last.empty()) {
                std::printf("no checkpoint in %s: starting from step 0\n", dir.c_str());
            } else {
                const auto ck = moekd::io::read_checkpoint<float>(last);
                if (ck.state.config != t.st.config)
                    throw moekd::Error("checkpoint '" + last + "' was written with config '" + ck.state.config +
                                       "', this run has '" + t.st.config + "'");
                t.load(last, break_resume);
                std::printf("resumed from %s at step %lld (epoch %lld, batch %lld)\n", last.c_str(),
                            (long long)t.st.step, (long long)t.st.epoch, (long long)t.st.batch_index);
            }
        }
        while (t.st.step < steps) {
            t.step();
            t.save_rotating(dir, keep);
            std::printf("step %lld loss %.6f\n", (long long)t.st.step, t.last_loss);
            std::fflush(stdout);
            if (sleep_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
        }
        if (!out.empty()) moekd::io::write_safetensors(out, t.model->state_dict(), {{"step", std::to_string(t.st.step)}});
    } catch (const moekd::Error& e) {
        std::fprintf(stderr, "resume_trainer: %s\n", e.what());
        return 1;
    }
    return 0;
}

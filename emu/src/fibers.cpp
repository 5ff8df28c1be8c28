// fibers.cpp — runs a kernel launch on the CPU: every block in order, the threads of a block as
// fibers (ucontext), so that __syncthreads, warp shuffles and shared memory behave as on the
// device.
//
// A block's threads start in thread order; each runs until it finishes or reaches a barrier or a
// warp collective, then the scheduler resolves what can go on:
//   - a warp collective is released when every lane of its mask has reached a collective with the
//     same mask and operation; the results (shuffled values, ballots) are computed then, from the
//     values every lane brought, so no lane can overwrite a value another has yet to read;
//   - __syncthreads is released when every thread of the block waits at it, at the same line;
//   - anything else is an error naming the kernel, the block, the threads and the lines: a
//     barrier some threads skipped (they exited), two barriers at different lines, a mask naming
//     a lane that has exited or does not exist, a shuffle reading a lane outside its mask, and a
//     deadlock (e.g. a barrier inside a warp-divergent branch).
// Exceptions thrown by kernel code end the launch with cudaErrorLaunchFailure and their text.
// Under AddressSanitizer the stack switches are announced to it (sanitizer fiber API), so kernel
// code is checked like any host code: an out-of-bounds index into device memory is a report.
// longjmp between fiber stacks is what the fast switch does; fortify's __longjmp_chk would take
// it for a jump into a dead frame.
#undef _FORTIFY_SOURCE
#include <moekd_emu/kernel.hpp>

#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define MOEKD_EMU_ASAN 1
#endif

// Switching: swapcontext saves and restores the signal mask, a system call each way, which made
// it most of the emulation's time. Outside ASan a fiber is started once with swapcontext and then
// switched with _setjmp/_longjmp (no system call); under ASan every switch is a swapcontext,
// announced to ASan with the fiber API.

namespace moekd::emu::detail {
namespace {

constexpr size_t kStackBytes = 256 * 1024;  // per fiber; untouched pages cost nothing (mmap)

enum class St { Ready, Barrier, Warp, Done };

struct Fiber {
    ucontext_t ctx;
    jmp_buf jb;            // where it yielded (fast switch)
    bool started = false;
    char* stack = nullptr;  // usable stack above a PROT_NONE guard page
    void* fake_stack = nullptr;
    dim3 tid;
    unsigned linear = 0;
    St st = St::Ready;
    std::source_location where;
    // the warp collective it waits in
    WarpOp op = WarpOp::Sync;
    uint32_t mask = 0;
    uint64_t value = 0, result = 0;
    int arg = 0, width = 32;
};

struct Block {
    const LaunchConfig* cfg = nullptr;
    const std::function<void()>* body = nullptr;
    dim3 idx;
    unsigned n = 0;
    std::vector<Fiber>* fibers = nullptr;
    Fiber* cur = nullptr;
    ucontext_t sched;
    jmp_buf sched_jb;  // the scheduler, while a fiber runs (fast switch)
    const void* sched_bottom = nullptr;
    size_t sched_size = 0;
    std::string error;
    std::vector<unsigned char> shared;
};

thread_local Block* g_block = nullptr;
thread_local std::vector<Fiber> g_fibers;  // reused across launches, with their stacks

char* new_stack() {
    const long page = sysconf(_SC_PAGESIZE);
    void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) return nullptr;
    mprotect(p, page, PROT_NONE);  // a kernel that overflows its stack faults instead of corrupting
    return static_cast<char*>(p) + page;
}

void start_switch(void** fake, const void* bottom, size_t size) {
#if defined(MOEKD_EMU_ASAN)
    __sanitizer_start_switch_fiber(fake, bottom, size);
#else
    (void)fake, (void)bottom, (void)size;
#endif
}
void finish_switch(void* fake, const void** bottom, size_t* size) {
#if defined(MOEKD_EMU_ASAN)
    __sanitizer_finish_switch_fiber(fake, bottom, size);
#else
    (void)fake, (void)bottom, (void)size;
#endif
}

std::string dim_str(dim3 d) {
    std::ostringstream os;
    os << "(" << d.x << ", " << d.y << ", " << d.z << ")";
    return os.str();
}
std::string where_str(const std::source_location& w) {
    std::string f = w.file_name();
    const size_t slash = f.rfind('/');
    if (slash != std::string::npos) f = f.substr(slash + 1);
    return f + ":" + std::to_string(w.line());
}
const char* op_name(WarpOp op) {
    switch (op) {
        case WarpOp::Sync: return "__syncwarp";
        case WarpOp::Idx: return "__shfl_sync";
        case WarpOp::Up: return "__shfl_up_sync";
        case WarpOp::Down: return "__shfl_down_sync";
        case WarpOp::Xor: return "__shfl_xor_sync";
        case WarpOp::Ballot: return "__ballot_sync";
        case WarpOp::Any: return "__any_sync";
        case WarpOp::All: return "__all_sync";
    }
    return "?";
}

Block& current(const char* what) {
    if (!g_block || !g_block->cur) {
        std::fprintf(stderr, "moekd emulated CUDA: %s used outside a kernel launch\n", what);
        std::abort();
    }
    return *g_block;
}

/// From a fiber back to the scheduler; returns when the scheduler resumes it.
void yield(Block& b, Fiber& f) {
#if defined(MOEKD_EMU_ASAN)
    start_switch(&f.fake_stack, b.sched_bottom, b.sched_size);
    swapcontext(&f.ctx, &b.sched);
    finish_switch(f.fake_stack, &b.sched_bottom, &b.sched_size);
#else
    if (!_setjmp(f.jb)) _longjmp(b.sched_jb, 1);
#endif
}

void run_body(Block& b, Fiber& f) {
    try {
        (*b.body)();
    } catch (const std::exception& e) {
        if (b.error.empty()) b.error = "thread " + dim_str(f.tid) + " threw: " + e.what();
    } catch (...) {
        if (b.error.empty()) b.error = "thread " + dim_str(f.tid) + " threw a non-std exception";
    }
    f.st = St::Done;
}

#if defined(MOEKD_EMU_ASAN)
void fiber_main() {
    Block& b = *g_block;
    Fiber& f = *b.cur;
    finish_switch(nullptr, &b.sched_bottom, &b.sched_size);
    run_body(b, f);
    start_switch(nullptr, b.sched_bottom, b.sched_size);  // this fiber's stack is done with
    swapcontext(&f.ctx, &b.sched);
    std::abort();  // never resumed
}
#else
/// A fiber outlives its thread: once started it runs one thread of a block after another (of
/// later blocks and launches too), parking between them, so contexts are made once per host
/// thread rather than once per device thread.
void fiber_main() {
    for (;;) {
        Block& b = *g_block;  // read anew each time: each launch has its own Block
        Fiber& f = *b.cur;
        run_body(b, f);
        if (!_setjmp(f.jb)) _longjmp(b.sched_jb, 1);  // parked as Done until the next thread
    }
}
#endif

/// From the scheduler into fiber f until it yields or finishes.
void resume(Block& b, Fiber& f) {
    b.cur = &f;
#if defined(MOEKD_EMU_ASAN)
    void* fake = nullptr;
    start_switch(&fake, f.stack, kStackBytes);
    swapcontext(&b.sched, &f.ctx);
    finish_switch(fake, nullptr, nullptr);
#else
    if (!_setjmp(b.sched_jb)) {
        if (!f.started) {
            f.started = true;
            swapcontext(&b.sched, &f.ctx);  // the first entry; it comes back by _longjmp
        } else {
            _longjmp(f.jb, 1);
        }
    }
#endif
    b.cur = nullptr;
}

/// Lane `lane`'s source lane for a shuffle, or -1 for "its own value".
int shuffle_source(const Fiber& f, int lane) {
    const int w = f.width, base = lane / w * w, pos = lane % w;
    switch (f.op) {
        case WarpOp::Idx: return base + ((f.arg % w) + w) % w;
        case WarpOp::Up: return pos >= f.arg ? lane - f.arg : lane;
        case WarpOp::Down: return pos + f.arg < w ? lane + f.arg : lane;
        case WarpOp::Xor: {
            const int s = lane ^ f.arg;
            return s / w == lane / w ? s : lane;
        }
        default: return lane;
    }
}

/// Tries to release the collective lane `f` waits in. Returns true if released; sets b.error
/// when the collective can never complete.
bool try_release_warp(Block& b, Fiber& f) {
    std::vector<Fiber>& fs = *b.fibers;
    const unsigned warp = f.linear / 32, lane0 = warp * 32;
    const unsigned lanes = std::min<unsigned>(32, b.n - lane0);
    const std::string head = std::string(op_name(f.op)) + " at " + where_str(f.where) + " (thread " +
                             dim_str(f.tid) + ", mask 0x" + [&] {
                                 char buf[16];
                                 std::snprintf(buf, sizeof buf, "%08x", f.mask);
                                 return std::string(buf);
                             }() + ")";
    if (f.width < 1 || f.width > 32 || (f.width & (f.width - 1)) != 0) {
        b.error = head + ": width " + std::to_string(f.width) + " is not a power of two in [1, 32]";
        return false;
    }
    if (!(f.mask >> (f.linear - lane0) & 1u)) {
        b.error = head + ": the calling lane " + std::to_string(f.linear - lane0) + " is not in its own mask";
        return false;
    }
    for (unsigned l = 0; l < 32; ++l) {
        if (!(f.mask >> l & 1u)) continue;
        if (l >= lanes) {
            b.error = head + ": the mask names lane " + std::to_string(l) + ", but warp " + std::to_string(warp) +
                      " of a block of " + std::to_string(b.n) + " threads has " + std::to_string(lanes) + " lanes";
            return false;
        }
        const Fiber& g = fs[lane0 + l];
        if (g.st == St::Done) {
            b.error = head + ": lane " + std::to_string(l) + " of the mask has exited";
            return false;
        }
        if (g.st != St::Warp) return false;  // not there yet (or at a barrier: a deadlock, found later)
        if (g.mask != f.mask || g.op != f.op || g.width != f.width) {
            b.error = head + ": lane " + std::to_string(l) + " waits in a different collective, " + op_name(g.op) +
                      " at " + where_str(g.where);
            return false;
        }
    }
    // every lane is there: compute the results from the values they brought
    uint64_t ballot = 0;
    for (unsigned l = 0; l < lanes; ++l)
        if (f.mask >> l & 1u && fs[lane0 + l].value) ballot |= uint64_t(1) << l;
    for (unsigned l = 0; l < lanes; ++l) {
        if (!(f.mask >> l & 1u)) continue;
        Fiber& g = fs[lane0 + l];
        switch (g.op) {
            case WarpOp::Sync: g.result = 0; break;
            case WarpOp::Ballot: g.result = ballot; break;
            case WarpOp::Any: g.result = ballot != 0; break;
            case WarpOp::All: g.result = ballot == f.mask; break;
            default: {
                const int s = shuffle_source(g, static_cast<int>(l));
                if (s < 0 || !(f.mask >> s & 1u)) {
                    b.error = head + ": lane " + std::to_string(l) + " reads lane " + std::to_string(s) +
                              ", which is not in the mask (its value is undefined on the device)";
                    return false;
                }
                g.result = fs[lane0 + s].value;
            }
        }
    }
    for (unsigned l = 0; l < lanes; ++l)
        if (f.mask >> l & 1u) fs[lane0 + l].st = St::Ready;
    return true;
}

/// Why no thread can go on: each place threads wait at, with how many and the first of them.
std::string deadlock_report(const Block& b) {
    struct Group {
        std::string what;
        unsigned count;
        dim3 first;
    };
    std::vector<Group> groups;
    for (unsigned i = 0; i < b.n; ++i) {
        const Fiber& f = (*b.fibers)[i];
        if (f.st == St::Done) continue;
        const std::string what = (f.st == St::Barrier ? std::string("__syncthreads") : std::string(op_name(f.op))) +
                                 " at " + where_str(f.where);
        auto g = std::find_if(groups.begin(), groups.end(), [&](const Group& x) { return x.what == what; });
        if (g == groups.end()) groups.push_back({what, 1, f.tid});
        else ++g->count;
    }
    std::ostringstream os;
    os << "deadlock: no thread can go on;";
    for (const Group& g : groups)
        os << " " << g.count << " thread(s) from " << dim_str(g.first) << " wait in " << g.what << ";";
    return os.str();
}

/// Runs one block to completion; returns "" or what went wrong.
std::string run_block(Block& b) {
    std::vector<Fiber>& fs = *b.fibers;
    const dim3 bd = b.cfg->block;
    for (unsigned i = 0; i < b.n; ++i) {
        Fiber& f = fs[i];
        if (!f.stack && !(f.stack = new_stack())) return "could not map a fiber stack (out of memory)";
        f.linear = i;
        f.tid = dim3(i % bd.x, i / bd.x % bd.y, i / (bd.x * bd.y));
        f.st = St::Ready;
        f.fake_stack = nullptr;
#if !defined(MOEKD_EMU_ASAN)
        if (f.started) continue;  // parked at the end of its last thread: resumes into the next
#endif
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = kStackBytes;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_main, 0);
    }
    for (;;) {
        for (unsigned i = 0; i < b.n; ++i) {
            if (fs[i].st != St::Ready) continue;
            resume(b, fs[i]);
            if (!b.error.empty()) return b.error;
        }
        unsigned done = 0, at_barrier = 0;
        bool released = false;
        for (unsigned i = 0; i < b.n; ++i) {
            Fiber& f = fs[i];
            if (f.st == St::Done) ++done;
            else if (f.st == St::Barrier) ++at_barrier;
            else if (f.st == St::Warp && try_release_warp(b, f)) released = true;
            if (!b.error.empty()) return b.error;
        }
        if (done == b.n) return "";
        if (released) continue;
        if (at_barrier > 0 && at_barrier + done == b.n) {
            const Fiber* first = nullptr;
            const Fiber* exited = nullptr;
            for (unsigned i = 0; i < b.n; ++i) {
                const Fiber& f = fs[i];
                if (f.st == St::Done) {
                    if (!exited) exited = &f;
                    continue;
                }
                if (!first) first = &f;
                if (f.where.line() != first->where.line() ||
                    std::string(f.where.file_name()) != first->where.file_name())
                    return "threads wait at two different __syncthreads: thread " + dim_str(first->tid) + " at " +
                           where_str(first->where) + ", thread " + dim_str(f.tid) + " at " + where_str(f.where);
            }
            if (exited)
                return "__syncthreads at " + where_str(first->where) + " reached by " + std::to_string(at_barrier) +
                       " of the block's " + std::to_string(b.n) + " threads; thread " + dim_str(exited->tid) +
                       " (and " + std::to_string(done - 1) + " more) exited without reaching it";
            for (unsigned i = 0; i < b.n; ++i) fs[i].st = St::Ready;
            continue;
        }
        return deadlock_report(b);
    }
}

}  // namespace

const dim3& thread_idx() { return current("threadIdx").cur->tid; }
const dim3& block_idx() { return current("blockIdx").idx; }
const dim3& block_dim() { return current("blockDim").cfg->block; }
const dim3& grid_dim() { return current("gridDim").cfg->grid; }

void* dynamic_shared() {
    Block& b = current("dynamic shared memory");
    return b.shared.empty() ? nullptr : b.shared.data();
}

void sync_block(const std::source_location& where) {
    Block& b = current("__syncthreads");
    Fiber& f = *b.cur;
    f.st = St::Barrier;
    f.where = where;
    yield(b, f);
}

uint64_t warp_collective(WarpOp op, uint32_t mask, uint64_t value, int arg, int width, const std::source_location& where) {
    Block& b = current(op_name(op));
    Fiber& f = *b.cur;
    f.st = St::Warp;
    f.op = op;
    f.mask = mask;
    f.value = value;
    f.arg = arg;
    f.width = width;
    f.where = where;
    yield(b, f);
    return f.result;
}

cudaError_t run_kernel(const LaunchConfig& cfg, const std::function<void()>& body,
                       const std::vector<const void*>& pointers) {
    const std::string launch = std::string("kernel ") + cfg.kernel + "<<<" + dim_str(cfg.grid) + ", " +
                               dim_str(cfg.block) + ", " + std::to_string(cfg.shared_bytes) + ">>>";
    const dim3 g = cfg.grid, bd = cfg.block;
    const uint64_t threads = uint64_t(bd.x) * bd.y * bd.z;
    const auto config_error = [&](const std::string& why) {
        return set_error(cudaErrorInvalidConfiguration, (launch + ": " + why).c_str());
    };
    if (g_block) return set_error(cudaErrorNotSupported, (launch + ": launched from inside a kernel").c_str());
    if (bd.x == 0 || bd.y == 0 || bd.z == 0 || g.x == 0 || g.y == 0 || g.z == 0)
        return config_error("a grid or block dimension is 0");
    if (threads > kMaxThreadsPerBlock)
        return config_error(std::to_string(threads) + " threads a block; the limit is " +
                            std::to_string(kMaxThreadsPerBlock));
    if (bd.x > kMaxBlockDimXY || bd.y > kMaxBlockDimXY || bd.z > kMaxBlockDimZ)
        return config_error("block dimensions limited to (1024, 1024, 64)");
    if (g.x > kMaxGridX || g.y > kMaxGridYZ || g.z > kMaxGridYZ)
        return config_error("grid dimensions limited to (2^31 - 1, 65535, 65535)");
    const size_t smem_limit = std::max(kDefaultSharedBytes, shared_optin(cfg.func));
    if (cfg.shared_bytes > smem_limit)
        return config_error(std::to_string(cfg.shared_bytes) + " bytes of dynamic shared memory; the limit is " +
                            std::to_string(smem_limit) +
                            " (above 48 KiB needs cudaFuncSetAttribute(MaxDynamicSharedMemorySize))");
    if (!valid_stream(cfg.stream)) return set_error(cudaErrorInvalidResourceHandle, (launch + ": unknown stream").c_str());
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess) {
        const cudaError_t e = cudaGetLastError();
        return set_error(e, (launch + ": no device").c_str());
    }

    if (g_fibers.size() < threads) g_fibers.resize(threads);
    Block b;
    b.cfg = &cfg;
    b.body = &body;
    b.n = static_cast<unsigned>(threads);
    b.fibers = &g_fibers;
    b.shared.assign(cfg.shared_bytes, 0xa5);  // not zero: the device does not clear shared memory
    g_block = &b;
    DeviceAccess open(pointers);  // the allocations passed to the kernel are open while it runs
    std::string err;
    for (unsigned z = 0; z < g.z && err.empty(); ++z)
        for (unsigned y = 0; y < g.y && err.empty(); ++y)
            for (unsigned x = 0; x < g.x && err.empty(); ++x) {
                b.idx = dim3(x, y, z);
                err = run_block(b);
                if (!err.empty()) err = launch + ", block " + dim_str(b.idx) + ": " + err;
            }
    g_block = nullptr;
    if (!err.empty()) {
        for (Fiber& f : g_fibers) f.started = false;  // some stopped mid-kernel: make them anew
        return set_error(cudaErrorLaunchFailure, err.c_str());
    }
    return cudaSuccess;
}

bool check_pointer_arg(const LaunchConfig& cfg, int index, const void* p) {
    if (!p || device_range(p, 1)) return true;
    char buf[32];
    std::snprintf(buf, sizeof buf, "%p", p);
    set_error(cudaErrorInvalidDevicePointer,
              (std::string("kernel ") + cfg.kernel + ": argument " + std::to_string(index) + " (" + buf +
               ") is not device memory (a host pointer passed to a kernel?)")
                  .c_str());
    return false;
}

}  // namespace moekd::emu::detail

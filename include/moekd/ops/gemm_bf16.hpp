// gemm_bf16.hpp — the bf16 matrix product behind the autocast scope (core/precision.hpp): fp32
// views in, bf16 copies of A and B (round to nearest even), fp32 accumulation, fp32 C.
//
//   gemm_auto(alpha, a, b, beta, c, owner_a, owner_b)   what matmul / linear / bmm / the expert
//                                  GEMMs call: detail::gemm in fp32, gemm_bf16 inside a bf16 scope.
//                                  An `owner` (the storage of a parameter) lets the operand's bf16
//                                  copy be cached until the next optimizer step.
//   gemm_bf16(alpha, a, b, beta, c)   oneDNN's matmul (brgemm, AVX512-BF16) on the bf16 copies;
//                                  split over moekd's pool, one oneDNN thread per chunk, so
//                                  oneDNN's OpenMP team never competes with the pool for cores.
//   gemm_bf16_emulated(...)        the same numbers by rounding to bf16 and calling the fp32 GEMM:
//                                  the reference the tests hold oneDNN to (only the order of the
//                                  fp32 sums differs), and the path of a build without oneDNN.
//
// Conversion rounds to nearest even like bf16(float). With AVX512-BF16 compiled in (-march on
// such a CPU) it is VCVTNEPS2BF16, which also flushes fp32 subnormals (|x| < 1.2e-38) to zero.
#pragma once

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(MOEKD_DNNL)
#include <dlfcn.h>

#include <oneapi/dnnl/dnnl.h>
#endif

#include "../core/allocator.hpp"
#include "../core/dtype.hpp"
#include "../core/parallel.hpp"
#include "../core/precision.hpp"
#include "gemm.hpp"

namespace moekd::detail {

/// dst[i] = bf16(src[i]) for i < n, round to nearest even.
inline void to_bf16(const float* src, bf16* dst, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512BF16__) && defined(__AVX512F__)
    for (; i + 32 <= n; i += 32) {
        const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
        _mm512_storeu_si512(reinterpret_cast<void*>(dst + i), reinterpret_cast<const __m512i&>(v));
    }
#endif
    for (; i < n; ++i) dst[i] = bf16(src[i]);
}

/// n bf16 values from moekd's caching allocator (as a tensor's storage is): a step converts the
/// same few sizes thousands of times, and through malloc the freed copies stayed resident (the
/// encoder step's peak RSS grew from 96 to 115 MB over 10 steps; with the cache it does not grow).
struct Bf16Buffer {
    bf16* p = nullptr;
    size_t n = 0;
    explicit Bf16Buffer(size_t count)
        : p(static_cast<bf16*>(CpuAllocator::instance().allocate(count * sizeof(bf16), "a bf16 copy"))), n(count) {}
    ~Bf16Buffer() { CpuAllocator::instance().deallocate(p, n * sizeof(bf16)); }
    Bf16Buffer(const Bf16Buffer&) = delete;
    Bf16Buffer& operator=(const Bf16Buffer&) = delete;
};

/// A bf16 copy of an fp32 view, stored in the view's own order (a transposed view stays a
/// transposed, dense copy): element (i, j) at p[i * rs + j * cs].
struct Bf16Operand {
    std::shared_ptr<const Bf16Buffer> hold;
    const bf16* p = nullptr;
    int64_t rs = 0, cs = 0;
};

inline Bf16Operand convert_bf16(const MatRef<const float>& m) {
    auto buf = std::make_shared<Bf16Buffer>(static_cast<size_t>(m.rows * m.cols));
    bf16* d = buf->p;
    Bf16Operand out;
    const BlasLayout l = blas_layout(m);
    const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(1, m.rows * m.cols / std::max<int64_t>(1, std::max(m.rows, m.cols))));
    if (l.ok && l.row_major) {
        parallel_for(m.rows, grain, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) to_bf16(m.data + i * l.ld, d + i * m.cols, m.cols);
        });
        out.rs = m.cols, out.cs = 1;
    } else if (l.ok) {
        parallel_for(m.cols, grain, [&](int64_t b, int64_t e) {
            for (int64_t j = b; j < e; ++j) to_bf16(m.data + j * l.ld, d + j * m.rows, m.rows);
        });
        out.rs = 1, out.cs = m.rows;
    } else {
        for (int64_t i = 0; i < m.rows; ++i)
            for (int64_t j = 0; j < m.cols; ++j) d[i * m.cols + j] = bf16(m.data[i * m.rs + j * m.cs]);
        out.rs = m.cols, out.cs = 1;
    }
    out.p = d;
    out.hold = std::move(buf);
    return out;
}

// ---- the cache of parameters' bf16 copies -------------------------------------------------------

struct Bf16CacheEntry {
    std::shared_ptr<const void> owner;  // keeps the parameter's storage (so its address) alive
    uint64_t generation = 0;
    Bf16Operand op;
};
struct Bf16Cache {
    std::mutex m;
    std::map<std::tuple<const float*, int64_t, int64_t, int64_t, int64_t>, Bf16CacheEntry> entries;
};
inline Bf16Cache& bf16_cache() {
    static Bf16Cache* c = new Bf16Cache();  // never destroyed: scopes may end during exit
    return *c;
}
inline void clear_bf16_cache() {
    Bf16Cache& c = bf16_cache();
    std::lock_guard<std::mutex> lk(c.m);
    c.entries.clear();
}
inline size_t bf16_cache_size() {
    Bf16Cache& c = bf16_cache();
    std::lock_guard<std::mutex> lk(c.m);
    return c.entries.size();
}

/// The bf16 copy of `m`: from the cache when `owner` names a parameter's storage and no
/// optimizer step has happened since the copy was made.
inline Bf16Operand bf16_operand(const MatRef<const float>& m, const std::shared_ptr<const void>& owner) {
    if (!owner) return convert_bf16(m);
    if (const BlasLayout l = blas_layout(m); l.ok && !l.row_major) {  // w.t() shares w's copy
        Bf16Operand t = bf16_operand(m.t(), owner);
        std::swap(t.rs, t.cs);
        return t;
    }
    const auto key = std::make_tuple(m.data, m.rows, m.cols, m.rs, m.cs);
    const uint64_t gen = param_generation().load();
    Bf16Cache& c = bf16_cache();
    {
        std::lock_guard<std::mutex> lk(c.m);
        auto it = c.entries.find(key);
        if (it != c.entries.end() && it->second.generation == gen && it->second.owner == owner) return it->second.op;
    }
    Bf16Operand op = convert_bf16(m);
    std::lock_guard<std::mutex> lk(c.m);
    c.entries[key] = Bf16CacheEntry{owner, gen, op};
    return op;
}

// ---- the products ---------------------------------------------------------------------------------

/// C = alpha * bf16(A) @ bf16(B) + beta * C through the fp32 GEMM (the reference; see the top).
inline void gemm_bf16_emulated(float alpha, const Bf16Operand& a, const Bf16Operand& b, int64_t M, int64_t N,
                               int64_t K, float beta, MatRef<float> c) {
    std::vector<float> fa(static_cast<size_t>(M * K)), fb(static_cast<size_t>(K * N));
    for (int64_t i = 0; i < M; ++i)
        for (int64_t k = 0; k < K; ++k) fa[i * K + k] = float(a.p[i * a.rs + k * a.cs]);
    for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < N; ++j) fb[k * N + j] = float(b.p[k * b.rs + j * b.cs]);
    gemm(alpha, MatRef<const float>{fa.data(), M, K, K, 1}, MatRef<const float>{fb.data(), K, N, N, 1}, beta, c);
}

#if defined(MOEKD_DNNL)
// oneDNN through its C API: nvcc 13 (which compiles every public header in CI) aborts on dnnl.hpp.

inline void dnnl_ok(dnnl_status_t st, const char* what) {
    MOEKD_CHECK(st == dnnl_success, "bf16 matmul: oneDNN's ", what, " failed (status ", int(st), ")");
}

/// One matmul primitive and its three memory objects (their data handles set per call).
struct DnnlMatmul {
    dnnl_primitive_t prim = nullptr;
    dnnl_memory_t a = nullptr, b = nullptr, c = nullptr;
};

/// oneDNN's objects for this thread: one engine, one stream, and the matmul primitives made so
/// far (a primitive's creation costs tens of microseconds; an attention step asks for the same
/// few shapes thousands of times). Pool workers live as long as the process: never destroyed.
struct DnnlThread {
    dnnl_engine_t eng = nullptr;
    dnnl_stream_t strm = nullptr;
    std::map<std::vector<int64_t>, DnnlMatmul> prims;
    // one OpenMP thread per caller: moekd's pool is the parallelism. Set before every call, as
    // anyone else in the process (libtorch's at::set_num_threads) may change this thread's
    // setting. libgomp is loaded by libdnnl; the symbol is looked up so nothing links OpenMP.
    using SetThreads = void (*)(int);
    SetThreads omp_set_num_threads = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    DnnlThread() {
        dnnl_ok(dnnl_engine_create(&eng, dnnl_cpu, 0), "engine_create");
        dnnl_ok(dnnl_stream_create(&strm, eng, dnnl_stream_default_flags), "stream_create");
    }
};
inline DnnlThread& dnnl_thread() {
    thread_local DnnlThread* t = new DnnlThread();
    return *t;
}

/// C (M, N) = alpha * A @ B + beta * C with A, B bf16 (any strides), C fp32 (any strides), on
/// the calling thread.
inline void dnnl_matmul_bf16(int64_t M, int64_t N, int64_t K, float alpha, const bf16* a, int64_t ars, int64_t acs,
                             const bf16* b, int64_t brs, int64_t bcs, float beta, float* c, int64_t crs, int64_t ccs) {
    DnnlThread& t = dnnl_thread();
    if (t.omp_set_num_threads) t.omp_set_num_threads(1);  // before a primitive is made: it sizes its work by it
    int32_t abits = 0, bbits = 0;
    std::memcpy(&abits, &alpha, 4), std::memcpy(&bbits, &beta, 4);
    const std::vector<int64_t> key{M, N, K, ars, acs, brs, bcs, crs, ccs, abits, bbits};
    auto it = t.prims.find(key);
    if (it == t.prims.end()) {
        dnnl_memory_desc_t amd, bmd, cmd;
        const dnnl_dims_t ad{M, K}, as{ars, acs}, bd{K, N}, bs{brs, bcs}, cd{M, N}, cs{crs, ccs};
        dnnl_ok(dnnl_memory_desc_init_by_strides(&amd, 2, ad, dnnl_bf16, as), "memory_desc_init (A)");
        dnnl_ok(dnnl_memory_desc_init_by_strides(&bmd, 2, bd, dnnl_bf16, bs), "memory_desc_init (B)");
        dnnl_ok(dnnl_memory_desc_init_by_strides(&cmd, 2, cd, dnnl_f32, cs), "memory_desc_init (C)");
        dnnl_matmul_desc_t md;
        dnnl_ok(dnnl_matmul_desc_init(&md, &amd, &bmd, nullptr, &cmd), "matmul_desc_init");
        dnnl_primitive_attr_t attr;
        dnnl_ok(dnnl_primitive_attr_create(&attr), "primitive_attr_create");
        if (alpha != 1.0f) dnnl_ok(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha), "set_output_scales");
        dnnl_post_ops_t po = nullptr;
        if (beta != 0.0f) {
            dnnl_ok(dnnl_post_ops_create(&po), "post_ops_create");
            dnnl_ok(dnnl_post_ops_append_sum(po, beta), "post_ops_append_sum");
            dnnl_ok(dnnl_primitive_attr_set_post_ops(attr, po), "set_post_ops");
        }
        dnnl_primitive_desc_t pd;
        const dnnl_status_t st = dnnl_primitive_desc_create(&pd, &md, attr, t.eng, nullptr);
        if (po) dnnl_post_ops_destroy(po);
        dnnl_primitive_attr_destroy(attr);
        dnnl_ok(st, "primitive_desc_create");
        DnnlMatmul mm;
        const dnnl_status_t st2 = dnnl_primitive_create(&mm.prim, pd);
        dnnl_primitive_desc_destroy(pd);
        dnnl_ok(st2, "primitive_create");
        dnnl_ok(dnnl_memory_create(&mm.a, &amd, t.eng, DNNL_MEMORY_NONE), "memory_create (A)");
        dnnl_ok(dnnl_memory_create(&mm.b, &bmd, t.eng, DNNL_MEMORY_NONE), "memory_create (B)");
        dnnl_ok(dnnl_memory_create(&mm.c, &cmd, t.eng, DNNL_MEMORY_NONE), "memory_create (C)");
        if (t.prims.size() >= 4096) {  // a bound, for runs whose shapes never repeat
            for (auto& [k, v] : t.prims) {
                dnnl_primitive_destroy(v.prim);
                dnnl_memory_destroy(v.a), dnnl_memory_destroy(v.b), dnnl_memory_destroy(v.c);
            }
            t.prims.clear();
        }
        it = t.prims.emplace(key, mm).first;
    }
    const DnnlMatmul& mm = it->second;
    dnnl_ok(dnnl_memory_set_data_handle(mm.a, const_cast<bf16*>(a)), "set_data_handle (A)");
    dnnl_ok(dnnl_memory_set_data_handle(mm.b, const_cast<bf16*>(b)), "set_data_handle (B)");
    dnnl_ok(dnnl_memory_set_data_handle(mm.c, c), "set_data_handle (C)");
    const dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, mm.a}, {DNNL_ARG_WEIGHTS, mm.b}, {DNNL_ARG_DST, mm.c}};
    dnnl_ok(dnnl_primitive_execute(mm.prim, t.strm, 3, args), "primitive_execute");
    dnnl_ok(dnnl_stream_wait(t.strm), "stream_wait");
}
#endif

/// C = alpha * bf16(A) @ bf16(B) + beta * C, fp32 accumulation. Sizes as detail::gemm.
inline void gemm_bf16(float alpha, const Bf16Operand& a, const Bf16Operand& b, int64_t M, int64_t N, int64_t K,
                      float beta, MatRef<float> c) {
    if (M == 0 || N == 0) return;
#if defined(MOEKD_DNNL)
    if (K == 0) {
        for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
                float& v = c.data[i * c.rs + j * c.cs];
                v = beta == 0.0f ? 0.0f : beta * v;
            }
        return;
    }
    // split the larger side of C over the pool (each chunk one single-threaded oneDNN call);
    // small products run whole on the caller
    const bool rows = M >= N;
    const int64_t side = rows ? M : N, work = M * N * K;
    const int64_t grain = work < (int64_t(1) << 21) ? side : std::max<int64_t>(16, side / (4 * num_threads()));
    parallel_for(side, grain, [&](int64_t lo, int64_t hi) {
        if (rows)
            dnnl_matmul_bf16(hi - lo, N, K, alpha, a.p + lo * a.rs, a.rs, a.cs, b.p, b.rs, b.cs, beta,
                             c.data + lo * c.rs, c.rs, c.cs);
        else
            dnnl_matmul_bf16(M, hi - lo, K, alpha, a.p, a.rs, a.cs, b.p + lo * b.cs, b.rs, b.cs, beta,
                             c.data + lo * c.cs, c.rs, c.cs);
    });
#else
    gemm_bf16_emulated(alpha, a, b, M, N, K, beta, c);
#endif
}

/// The storage of a parameter (a leaf that requires grad) inside a bf16 scope, else null: what
/// lets gemm_auto cache the parameter's bf16 copy.
template <class T>
std::shared_ptr<const void> param_owner(const Tensor<T>& x) {
    if constexpr (std::is_same_v<T, float>)
        if (tl_precision.cpu == Precision::bf16 && x.defined() && x.is_leaf() && x.requires_grad()) return x.impl()->storage;
    return nullptr;
}

/// The product every autocast-aware op calls: fp32 detail::gemm, or inside a bf16 scope the bf16
/// product on bf16 copies (a parameter's copy cached through its `owner`).
/// `keep_a` / `keep_b` (optional): an operand that feeds two products is converted once. Empty
/// (p == nullptr), the product converts the operand and leaves its copy there; filled, the
/// product reads it as the operand's copy (the caller's promise). Ignored outside a bf16 scope.
template <class T>
void gemm_auto(T alpha, MatRef<const T> a, MatRef<const T> b, T beta, MatRef<T> c,
               const std::shared_ptr<const void>& owner_a = nullptr, const std::shared_ptr<const void>& owner_b = nullptr,
               Bf16Operand* keep_a = nullptr, Bf16Operand* keep_b = nullptr) {
    if constexpr (std::is_same_v<T, float>) {
        if (tl_precision.cpu == Precision::bf16) {
            MOEKD_CHECK(a.cols == b.rows && a.rows == c.rows && b.cols == c.cols, "gemm: (", a.rows, ", ", a.cols,
                        ") @ (", b.rows, ", ", b.cols, ") into (", c.rows, ", ", c.cols, "): sizes do not agree");
            if (c.rows == 0 || c.cols == 0) return;
            const auto operand = [](const MatRef<const float>& m, const std::shared_ptr<const void>& owner,
                                    Bf16Operand* keep) {
                if (!keep) return bf16_operand(m, owner);
                if (!keep->p) *keep = bf16_operand(m, owner);
                Bf16Operand op = *keep;  // a vector's unused stride as a dense copy would set it
                if (m.rows == 1 && op.cs == 1) op.rs = m.cols;
                if (m.cols == 1 && op.rs == 1) op.cs = m.rows;
                return op;
            };
            gemm_bf16(alpha, operand(a, owner_a, keep_a), operand(b, owner_b, keep_b), c.rows, c.cols, a.cols, beta, c);
            return;
        }
    }
    gemm(alpha, a, b, beta, c);
}

/// The copy of the transposed view: the same values, the strides swapped.
inline Bf16Operand transposed(Bf16Operand op) {
    std::swap(op.rs, op.cs);
    return op;
}

}  // namespace moekd::detail

// blas.cpp — cuBLAS (GEMM, strided-batched GEMM, their bf16 *Ex forms, geam) for the emulated CUDA build, on Eigen.
// Reference code: correctness and argument checks, not speed. Each call checks its dimensions as
// cuBLAS documents (m, n, k >= 0; lda >= rows of the stored operand) and that every operand it
// reads or writes lies inside device memory.
#include <moekd_emu/cublas.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

struct cublasContext {
    cudaStream_t stream = nullptr;
};

namespace {

thread_local std::string g_detail;  // the last failure, for cublasGetStatusString

cublasStatus_t fail(cublasStatus_t st, const std::string& why) {
    g_detail = why;
    return st;
}

/// The stored matrix (rows x cols, column-major, leading dim ld) lies in device memory.
template <class T>
bool operand_ok(const char* call, const char* name, const T* p, int rows, int cols, int ld, cublasStatus_t* st) {
    if (rows == 0 || cols == 0) return true;
    const size_t span = (size_t(cols) - 1) * size_t(ld) + size_t(rows);
    if (ld < std::max(1, rows)) {
        *st = fail(CUBLAS_STATUS_INVALID_VALUE, std::string(call) + ": ld" + name + " " + std::to_string(ld) +
                                                    " < rows " + std::to_string(rows));
        return false;
    }
    if (!moekd::emu::device_range(p, span * sizeof(T))) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%p", static_cast<const void*>(p));
        *st = fail(CUBLAS_STATUS_INVALID_VALUE, std::string(call) + ": " + name + " (" + buf + ", " +
                                                    std::to_string(rows) + " x " + std::to_string(cols) + ", ld " +
                                                    std::to_string(ld) + ") is not inside one device allocation");
        return false;
    }
    return true;
}

template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
template <class T>
using CMap = Eigen::Map<const Mat<T>, 0, Eigen::OuterStride<>>;
template <class T>
using MMap = Eigen::Map<Mat<T>, 0, Eigen::OuterStride<>>;

/// A stored column-major bf16 matrix (the bits, rows x cols, leading dim ld) widened to float:
/// exact, a bf16 value is the top half of its float.
Mat<float> widen_bf16(const uint16_t* p, int rows, int cols, int ld) {
    Mat<float> out(rows, cols);
    for (int j = 0; j < cols; ++j)
        for (int i = 0; i < rows; ++i) {
            const uint32_t u = uint32_t(p[i + size_t(j) * ld]) << 16;
            std::memcpy(&out(i, j), &u, 4);
        }
    return out;
}

/// C (T) = alpha op(A) op(B) + beta C with A and B stored as S: T itself, or uint16_t holding bf16
/// bits (cublasGemmEx's CUDA_R_16BF inputs; the product accumulates in T = float, as
/// CUBLAS_COMPUTE_32F does).
template <class T, class S = T>
cublasStatus_t gemm(const char* call, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                    int k, const T* alpha, const S* a, int lda, const S* b, int ldb, const T* beta, T* c, int ldc) {
    if (!h) return fail(CUBLAS_STATUS_NOT_INITIALIZED, std::string(call) + ": null handle");
    if (m < 0 || n < 0 || k < 0) return fail(CUBLAS_STATUS_INVALID_VALUE, std::string(call) + ": negative m, n or k");
    if (ta == CUBLAS_OP_C || tb == CUBLAS_OP_C) ta = ta == CUBLAS_OP_C ? CUBLAS_OP_T : ta, tb = tb == CUBLAS_OP_C ? CUBLAS_OP_T : tb;
    const int ar = ta == CUBLAS_OP_N ? m : k, ac = ta == CUBLAS_OP_N ? k : m;
    const int br = tb == CUBLAS_OP_N ? k : n, bc = tb == CUBLAS_OP_N ? n : k;
    cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
    if (!operand_ok(call, "c", c, m, n, ldc, &st)) return st;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    if (k > 0 && (!operand_ok(call, "a", a, ar, ac, lda, &st) || !operand_ok(call, "b", b, br, bc, ldb, &st))) return st;
    moekd::emu::DeviceAccess open{a, b, c};
    MMap<T> C(c, m, n, Eigen::OuterStride<>(ldc));
    Mat<T> prod = Mat<T>::Zero(m, n);
    const auto product = [&](const auto& A, const auto& B) {
        if (ta == CUBLAS_OP_N && tb == CUBLAS_OP_N) prod.noalias() = A * B;
        else if (ta == CUBLAS_OP_N) prod.noalias() = A * B.transpose();
        else if (tb == CUBLAS_OP_N) prod.noalias() = A.transpose() * B;
        else prod.noalias() = A.transpose() * B.transpose();
    };
    if (k > 0) {
        if constexpr (std::is_same_v<S, T>)
            product(CMap<T>(a, ar, ac, Eigen::OuterStride<>(lda)), CMap<T>(b, br, bc, Eigen::OuterStride<>(ldb)));
        else
            product(widen_bf16(a, ar, ac, lda), widen_bf16(b, br, bc, ldb));
    }
    // beta == 0: C is not read (it may hold NaN), as in BLAS
    if (*beta == T(0)) C = *alpha * prod;
    else C = *alpha * prod + *beta * C;
    return CUBLAS_STATUS_SUCCESS;
}

template <class T>
cublasStatus_t geam(const char* call, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                    const T* alpha, const T* a, int lda, const T* beta, const T* b, int ldb, T* c, int ldc) {
    if (!h) return fail(CUBLAS_STATUS_NOT_INITIALIZED, std::string(call) + ": null handle");
    if (m < 0 || n < 0) return fail(CUBLAS_STATUS_INVALID_VALUE, std::string(call) + ": negative m or n");
    cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
    if (!operand_ok(call, "c", c, m, n, ldc, &st)) return st;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    const bool at = ta != CUBLAS_OP_N, bt = tb != CUBLAS_OP_N;
    moekd::emu::DeviceAccess open{a, b, c};
    Mat<T> out = Mat<T>::Zero(m, n);  // computed aside: C may alias A or B
    if (*alpha != T(0)) {
        if (!operand_ok(call, "a", a, at ? n : m, at ? m : n, lda, &st)) return st;
        const CMap<T> A(a, at ? n : m, at ? m : n, Eigen::OuterStride<>(lda));
        if (at) out += *alpha * A.transpose();
        else out += *alpha * A;
    }
    if (*beta != T(0)) {
        if (!operand_ok(call, "b", b, bt ? n : m, bt ? m : n, ldb, &st)) return st;
        const CMap<T> B(b, bt ? n : m, bt ? m : n, Eigen::OuterStride<>(ldb));
        if (bt) out += *beta * B.transpose();
        else out += *beta * B;
    }
    MMap<T>(c, m, n, Eigen::OuterStride<>(ldc)) = out;
    return CUBLAS_STATUS_SUCCESS;
}

template <class T, class S = T>
cublasStatus_t gemm_batched(const char* call, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const T* alpha, const S* a, int lda, long long sa, const S* b, int ldb,
                            long long sb, const T* beta, T* c, int ldc, long long sc, int batch) {
    if (batch < 0) return fail(CUBLAS_STATUS_INVALID_VALUE, std::string(call) + ": negative batch count");
    for (int i = 0; i < batch; ++i)
        if (const cublasStatus_t st = gemm(call, h, ta, tb, m, n, k, alpha, a + i * sa, lda, b + i * sb, ldb, beta,
                                           c + i * sc, ldc))
            return st;
    return CUBLAS_STATUS_SUCCESS;
}

const char* type_name(cudaDataType t) {
    switch (t) {
        case CUDA_R_32F: return "CUDA_R_32F";
        case CUDA_R_64F: return "CUDA_R_64F";
        case CUDA_R_16F: return "CUDA_R_16F";
        case CUDA_R_16BF: return "CUDA_R_16BF";
    }
    return "an unknown cudaDataType";
}

/// cublasGemmEx / cublasGemmStridedBatchedEx (batch 1 for the former): the combinations moekd
/// uses, bf16 x bf16 -> fp32 and fp32 x fp32 -> fp32, both with fp32 accumulation.
cublasStatus_t gemm_ex(const char* call, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                       int k, const void* alpha, const void* a, cudaDataType at, int lda, long long sa, const void* b,
                       cudaDataType bt, int ldb, long long sb, const void* beta, void* c, cudaDataType ct, int ldc,
                       long long sc, int batch, cublasComputeType_t compute) {
    if (compute != CUBLAS_COMPUTE_32F || ct != CUDA_R_32F || at != bt || (at != CUDA_R_16BF && at != CUDA_R_32F))
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, std::string(call) + ": A " + type_name(at) + ", B " + type_name(bt) +
                                                     ", C " + type_name(ct) + ", compute " + std::to_string(compute) +
                                                     " (the emulation has A = B = CUDA_R_16BF or CUDA_R_32F, C "
                                                     "CUDA_R_32F, CUBLAS_COMPUTE_32F)");
    const auto* al = static_cast<const float*>(alpha);
    const auto* be = static_cast<const float*>(beta);
    auto* cc = static_cast<float*>(c);
    if (at == CUDA_R_32F)
        return gemm_batched<float>(call, h, ta, tb, m, n, k, al, static_cast<const float*>(a), lda, sa,
                                   static_cast<const float*>(b), ldb, sb, be, cc, ldc, sc, batch);
    return gemm_batched<float, uint16_t>(call, h, ta, tb, m, n, k, al, static_cast<const uint16_t*>(a), lda, sa,
                                         static_cast<const uint16_t*>(b), ldb, sb, be, cc, ldc, sc, batch);
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* h) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        (void)cudaGetLastError();
        return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasCreate: no device");
    }
    *h = new cublasContext();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
    if (!moekd::emu::valid_stream(s)) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasSetStream: unknown stream");
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetStream(cublasHandle_t h, cudaStream_t* s) {
    *s = h->stream;
    return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t st) {
    switch (st) {
        case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
        case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
        case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
        case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
        case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
        case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}
const char* cublasGetStatusString(cublasStatus_t st) {
    thread_local std::string text;
    text = st == CUBLAS_STATUS_SUCCESS ? "success" : std::string(cublasGetStatusName(st));
    if (st != CUBLAS_STATUS_SUCCESS && !g_detail.empty()) text += " [emulated cuBLAS: " + g_detail + "]";
    return text.c_str();
}
cublasStatus_t cublasGetProperty(libraryPropertyType type, int* value) {
    *value = type == MAJOR_VERSION ? 13 : 0;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float* alpha, const float* a, int lda, const float* b, int ldb, const float* beta,
                           float* c, int ldc) {
    return gemm("cublasSgemm", h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
cublasStatus_t cublasDgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const double* alpha, const double* a, int lda, const double* b, int ldb,
                           const double* beta, double* c, int ldc) {
    return gemm("cublasDgemm", h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float* alpha, const float* a, int lda, long long sa,
                                         const float* b, int ldb, long long sb, const float* beta, float* c, int ldc,
                                         long long sc, int batch) {
    return gemm_batched("cublasSgemmStridedBatched", h, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc,
                        sc, batch);
}
cublasStatus_t cublasDgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const double* alpha, const double* a, int lda, long long sa,
                                         const double* b, int ldb, long long sb, const double* beta, double* c,
                                         int ldc, long long sc, int batch) {
    return gemm_batched("cublasDgemmStridedBatched", h, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc,
                        sc, batch);
}
cublasStatus_t cublasSgeam(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                           const float* alpha, const float* a, int lda, const float* beta, const float* b, int ldb,
                           float* c, int ldc) {
    return geam("cublasSgeam", h, ta, tb, m, n, alpha, a, lda, beta, b, ldb, c, ldc);
}
cublasStatus_t cublasDgeam(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                           const double* alpha, const double* a, int lda, const double* beta, const double* b,
                           int ldb, double* c, int ldc) {
    return geam("cublasDgeam", h, ta, tb, m, n, alpha, a, lda, beta, b, ldb, c, ldc);
}
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void* alpha, const void* a, cudaDataType at, int lda, const void* b, cudaDataType bt,
                            int ldb, const void* beta, void* c, cudaDataType ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t) {
    return gemm_ex("cublasGemmEx", h, ta, tb, m, n, k, alpha, a, at, lda, 0, b, bt, ldb, 0, beta, c, ct, ldc, 0, 1,
                   compute);
}
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void* alpha, const void* a, cudaDataType at, int lda,
                                          long long sa, const void* b, cudaDataType bt, int ldb, long long sb,
                                          const void* beta, void* c, cudaDataType ct, int ldc, long long sc, int batch,
                                          cublasComputeType_t compute, cublasGemmAlgo_t) {
    return gemm_ex("cublasGemmStridedBatchedEx", h, ta, tb, m, n, k, alpha, a, at, lda, sa, b, bt, ldb, sb, beta, c,
                   ct, ldc, sc, batch, compute);
}

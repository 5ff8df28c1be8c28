// linalg.hpp — umbrella for linear algebra beyond matmul: the thin SVD and the OneS truncation
// rank (linalg/svd.hpp), and the cuSOLVER SVD of device matrices (linalg/svd_cuda.hpp, present
// only in CUDA builds; empty otherwise).
#pragma once

#include "linalg/svd.hpp"
#include "linalg/svd_cuda.hpp"

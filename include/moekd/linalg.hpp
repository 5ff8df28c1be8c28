// linalg.hpp — umbrella for linear algebra beyond matmul: the thin SVD and the OneS truncation
// rank (linalg/svd.hpp), the cuSOLVER SVD of device matrices (linalg/svd_cuda.hpp, present
// only in CUDA builds; empty otherwise), and OneS SVD knowledge gathering
// (linalg/knowledge_gathering.hpp: gather_weights, average_biases).
#pragma once

#include "linalg/svd.hpp"
#include "linalg/svd_cuda.hpp"
#include "linalg/knowledge_gathering.hpp"

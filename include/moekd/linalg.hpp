// linalg.hpp — umbrella for linear algebra beyond matmul: the thin SVD and the OneS truncation
// rank (linalg/svd.hpp; of a CUDA tensor it runs cuSOLVER's gesvdj, kernels/linalg.cu), and OneS
// SVD knowledge gathering
// (linalg/knowledge_gathering.hpp: gather_weights, average_biases).
#pragma once

#include "linalg/svd.hpp"
#include "linalg/knowledge_gathering.hpp"

// Emulated CUDA build only (emu/README.md): cuBLAS answered on the host.
#pragma once
#include <moekd_emu/cublas.hpp>

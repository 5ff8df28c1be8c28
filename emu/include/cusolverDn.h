// Emulated CUDA build only (emu/README.md): cuSOLVER's gesvdj answered on the host.
#pragma once
#include <moekd_emu/cusolver.hpp>

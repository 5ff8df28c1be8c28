// Emulated CUDA build only (emu/README.md): the runtime API from host code.
#pragma once
#include <moekd_emu/runtime.hpp>

// Emulated CUDA build only (emu/README.md): the runtime API and the device-code keywords.
#pragma once
#include <moekd_emu/kernel.hpp>
#include <moekd_emu/runtime.hpp>

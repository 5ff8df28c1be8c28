// device.hpp — where a tensor's elements live. CPU is always built; CUDA when MOEKD_CUDA is set.
#pragma once

#include <ostream>

namespace moekd {

enum class Device { CPU, CUDA };

inline const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }
inline std::ostream& operator<<(std::ostream& os, Device d) { return os << device_name(d); }

}  // namespace moekd

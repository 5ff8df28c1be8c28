# bench/kt.cmake — kt_bench: the knowledge-transfer losses and SVD against libtorch
# (bench/kt_bench.cpp + bench/kt_bench_torch.cpp; cases and output in bench/kt_bench.cpp's header).
# Meant to be include()d from bench/CMakeLists.txt (after moekd::moekd and moekd_own_target exist):
#   include(${CMAKE_CURRENT_SOURCE_DIR}/kt.cmake)
# Built only when libtorch is found (Debian: libtorch-dev). The libtorch side is its own object
# library: it sees torch's headers and flags, never moekd's.
find_package(Torch QUIET)
if(NOT Torch_FOUND)
  message(STATUS "moekd bench: kt_bench skipped (needs libtorch: find_package(Torch))")
  return()
endif()
if(NOT MOEKD_OPENBLAS_LIBRARY)
  message(STATUS "moekd bench: kt_bench skipped (needs OpenBLAS, the BLAS both sides must share)")
  return()
endif()

add_library(moekd_bench_kt_torch OBJECT ${CMAKE_CURRENT_LIST_DIR}/kt_bench_torch.cpp)
target_include_directories(moekd_bench_kt_torch PRIVATE ${TORCH_INCLUDE_DIRS})
separate_arguments(_moekd_kt_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
target_compile_options(moekd_bench_kt_torch PRIVATE ${_moekd_kt_torch_flags} -O3)
target_compile_features(moekd_bench_kt_torch PRIVATE cxx_std_17)

add_executable(kt_bench ${CMAKE_CURRENT_LIST_DIR}/kt_bench.cpp $<TARGET_OBJECTS:moekd_bench_kt_torch>)
target_link_libraries(kt_bench PRIVATE moekd::moekd ${TORCH_LIBRARIES} ${MOEKD_OPENBLAS_LIBRARY})
moekd_own_target(kt_bench)

if(MOEKD_BUILD_TESTS)
  # smoke test: builds, agrees with libtorch, runs in seconds (never a performance gate)
  add_test(NAME bench_kt_quick COMMAND kt_bench --quick)
  set_tests_properties(bench_kt_quick PROPERTIES LABELS bench TIMEOUT 300)
endif()

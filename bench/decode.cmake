# bench/decode.cmake — the greedy-decoding benchmark (included from bench/CMakeLists.txt).
#
# decode_bench: greedy decoding tokens/s of an nn::TransformerDecoder, moekd's full-prefix path vs
# its key/value-cached path (nn/decode.hpp) vs a libtorch incremental decoder with the same
# weights. decode_bench.cpp (moekd side + driver) and decode_bench_torch.cpp (libtorch side, its
# own object library compiled with libtorch's flags) talk through plain functions over buffers.
# Needs OpenBLAS (MOEKD_BLAS) and Debian's libtorch-dev; skipped otherwise.
if(NOT MOEKD_OPENBLAS_LIBRARY OR NOT MOEKD_BLAS)
  message(STATUS "moekd bench: decode_bench skipped (needs OpenBLAS with MOEKD_BLAS=ON)")
  return()
endif()
find_package(Torch QUIET)
if(NOT TORCH_FOUND)
  message(STATUS "moekd bench: decode_bench skipped (libtorch-dev not found: find_package(Torch))")
  return()
endif()

add_library(moekd_bench_decode_torch OBJECT ${CMAKE_CURRENT_LIST_DIR}/decode_bench_torch.cpp)
separate_arguments(_moekd_decode_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
target_compile_options(moekd_bench_decode_torch PRIVATE ${_moekd_decode_torch_flags} -O3)
target_link_libraries(moekd_bench_decode_torch PRIVATE ${TORCH_LIBRARIES})
target_compile_features(moekd_bench_decode_torch PRIVATE cxx_std_17)

add_executable(decode_bench ${CMAKE_CURRENT_LIST_DIR}/decode_bench.cpp $<TARGET_OBJECTS:moekd_bench_decode_torch>)
target_link_libraries(decode_bench PRIVATE moekd::moekd ${TORCH_LIBRARIES} ${MOEKD_OPENBLAS_LIBRARY})
moekd_own_target(decode_bench)

if(MOEKD_BUILD_TESTS)
  # smoke test: the three sides emit the same tokens from the same weights (exit 1 otherwise);
  # never a performance gate
  add_test(NAME bench_decode_quick COMMAND decode_bench --quick)
  set_tests_properties(bench_decode_quick PROPERTIES LABELS bench TIMEOUT 300)
endif()

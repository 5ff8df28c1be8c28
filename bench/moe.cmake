# bench/moe.cmake — the MoE-layer benchmark (included from bench/CMakeLists.txt).
#
# moe_bench: a top-1 MoE FFN training step, moekd::moe::MoELayer against two libtorch
# formulations (per-expert GEMMs over tokens sorted by expert; fairseq's one-hot dispatch einsum).
# moe_bench.cpp (moekd side + driver) and moe_bench_torch.cpp (libtorch side, its own object
# library compiled with libtorch's flags) talk through plain functions over float buffers.
# Needs OpenBLAS (MOEKD_BLAS) and Debian's libtorch-dev; skipped otherwise.
if(NOT MOEKD_OPENBLAS_LIBRARY OR NOT MOEKD_BLAS)
  message(STATUS "moekd bench: moe_bench skipped (needs OpenBLAS with MOEKD_BLAS=ON)")
  return()
endif()
find_package(Torch QUIET)
if(NOT TORCH_FOUND)
  message(STATUS "moekd bench: moe_bench skipped (libtorch-dev not found: find_package(Torch))")
  return()
endif()

add_library(moekd_bench_moe_torch OBJECT ${CMAKE_CURRENT_LIST_DIR}/moe_bench_torch.cpp)
separate_arguments(_moekd_moe_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
target_compile_options(moekd_bench_moe_torch PRIVATE ${_moekd_moe_torch_flags} -O3)
target_link_libraries(moekd_bench_moe_torch PRIVATE ${TORCH_LIBRARIES})
target_compile_features(moekd_bench_moe_torch PRIVATE cxx_std_17)

add_executable(moe_bench ${CMAKE_CURRENT_LIST_DIR}/moe_bench.cpp $<TARGET_OBJECTS:moekd_bench_moe_torch>)
target_link_libraries(moe_bench PRIVATE moekd::moekd ${TORCH_LIBRARIES} ${MOEKD_OPENBLAS_LIBRARY})
moekd_own_target(moe_bench)

if(MOEKD_BUILD_TESTS)
  # smoke test: both sides agree on the same weights (exit 1 otherwise); never a performance gate
  add_test(NAME bench_moe_quick COMMAND moe_bench --quick)
  set_tests_properties(bench_moe_quick PROPERTIES LABELS bench TIMEOUT 300)
  # bf16: both sides' bf16 steps within bf16's tolerance of the fp32 step (skips without oneDNN)
  add_test(NAME bench_moe_bf16_quick COMMAND moe_bench --quick --precision bf16)
  set_tests_properties(bench_moe_bf16_quick PROPERTIES LABELS bench TIMEOUT 300)
endif()

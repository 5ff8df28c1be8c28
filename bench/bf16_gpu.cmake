# bench/bf16_gpu.cmake — bf16_gpu_bench: the bf16 expert GEMMs of a CUDA autocast scope against
# cuBLAS's own bf16 GEMM of the same FLOPs (bench/bf16_gpu_bench.cpp). include()d from
# bench/CMakeLists.txt. Needs only the CUDA backend: scripts/gpu_check.sh builds and runs it on a
# lent GPU (a bench/ target named *gpu*). The emulated build runs it with --quick as a smoke test
# (it builds, both sides agree; never a performance gate: the emulation says nothing about speed).
if(MOEKD_CUDA)
  add_executable(bf16_gpu_bench ${CMAKE_CURRENT_LIST_DIR}/bf16_gpu_bench.cpp)
  target_link_libraries(bf16_gpu_bench PRIVATE moekd_cuda)
  moekd_own_target(bf16_gpu_bench)
endif()
if(MOEKD_EMULATED_CUDA AND MOEKD_BUILD_TESTS)
  add_executable(bf16_gpu_bench_emu ${CMAKE_CURRENT_LIST_DIR}/bf16_gpu_bench.cpp)
  target_link_libraries(bf16_gpu_bench_emu PRIVATE moekd_cuda_emu)
  moekd_own_target(bf16_gpu_bench_emu)
  add_test(NAME bench_bf16_gpu_emu_quick COMMAND bf16_gpu_bench_emu --quick)
  set_tests_properties(bench_bf16_gpu_emu_quick PROPERTIES LABELS "bench;emu" TIMEOUT 120
                       PASS_REGULAR_EXPRESSION "case=bf16_expert_ffn_fwd_E4 .*ratio=")
endif()

# bench/dist.cmake — the expert-parallel MoE benchmark (included from bench/CMakeLists.txt).
#
# dist_moe_bench: tokens/s of an MoE layer training step on 1 rank and on 2 expert-parallel ranks
# under Open MPI, with the communication share of the step (bench/dist_moe_bench.cpp). Without MPI
# (moekd::mpi) it builds and measures the 1-rank case only.
if(NOT MOEKD_OPENBLAS_LIBRARY)
  message(STATUS "moekd bench: dist_moe_bench skipped (needs libopenblas-dev)")
  return()
endif()
add_executable(dist_moe_bench ${CMAKE_CURRENT_LIST_DIR}/dist_moe_bench.cpp)
target_link_libraries(dist_moe_bench PRIVATE moekd::moekd ${MOEKD_OPENBLAS_LIBRARY})
if(TARGET moekd::mpi AND MOEKD_MPIRUN)
  target_link_libraries(dist_moe_bench PRIVATE moekd::mpi)
  # the real path: Open MPI rejects the prefix "/" that /bin/mpirun (via /bin -> usr/bin) implies
  get_filename_component(_dist_bench_mpirun "${MOEKD_MPIRUN}" REALPATH)
  target_compile_definitions(dist_moe_bench PRIVATE MOEKD_MPIRUN_PATH="${_dist_bench_mpirun}")
endif()
moekd_own_target(dist_moe_bench)

if(MOEKD_BUILD_TESTS)
  # smoke test: both cases agree with moe::MoELayer (exit 1 otherwise); never a performance gate
  add_test(NAME bench_dist_moe_quick COMMAND dist_moe_bench --quick)
  set_tests_properties(bench_dist_moe_quick PROPERTIES LABELS bench TIMEOUT 120)
endif()

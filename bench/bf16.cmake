# bench/bf16.cmake — bf16_bench: the autocast scope's bf16 product against OpenBLAS sgemm, oneDNN
# called directly and libtorch's CPU autocast (bench/bf16_bench.cpp + bench/bf16_bench_torch.cpp).
# include()d from bench/CMakeLists.txt. Needs MOEKD_DNNL, libtorch, OpenBLAS's cblas.h and OpenMP
# (the direct oneDNN side sets its OpenMP threads). The libtorch side is its own object library.
if(NOT MOEKD_DNNL OR NOT Torch_FOUND OR NOT MOEKD_OPENBLAS_LIBRARY OR NOT MOEKD_CBLAS_INCLUDE_DIR OR NOT OpenMP_CXX_FOUND)
  message(STATUS "moekd bench: bf16_bench skipped (needs MOEKD_DNNL, libtorch, OpenBLAS with cblas.h, OpenMP)")
  return()
endif()

add_library(moekd_bench_bf16_torch OBJECT ${CMAKE_CURRENT_LIST_DIR}/bf16_bench_torch.cpp)
target_include_directories(moekd_bench_bf16_torch PRIVATE ${TORCH_INCLUDE_DIRS})
separate_arguments(_moekd_bf16_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
target_compile_options(moekd_bench_bf16_torch PRIVATE ${_moekd_bf16_torch_flags} -O3)
target_compile_features(moekd_bench_bf16_torch PRIVATE cxx_std_17)

add_executable(bf16_bench ${CMAKE_CURRENT_LIST_DIR}/bf16_bench.cpp $<TARGET_OBJECTS:moekd_bench_bf16_torch>)
target_include_directories(bf16_bench PRIVATE ${MOEKD_CBLAS_INCLUDE_DIR})
target_link_libraries(bf16_bench PRIVATE moekd::moekd ${TORCH_LIBRARIES} ${MOEKD_OPENBLAS_LIBRARY} ${OpenMP_CXX_LIBRARIES})
moekd_own_target(bf16_bench)

if(MOEKD_BUILD_TESTS)
  # smoke test: builds, every side agrees, runs in seconds (never a performance gate)
  add_test(NAME bench_bf16_quick COMMAND bf16_bench --quick)
  set_tests_properties(bench_bf16_quick PROPERTIES LABELS bench TIMEOUT 120)
endif()

# cmake/mpi.cmake — the Open MPI backend of moekd/dist (MpiComm, dist::init under mpirun).
#
#   moekd::mpi   INTERFACE target: MPI::MPI_CXX + MOEKD_HAVE_MPI=1. Link it (next to moekd::moekd)
#                into programs that should run as `mpirun -np N`; without it they run as one
#                process (dist::init returns SingleProcess).
# MPI is optional: when it is missing, moekd::mpi is not defined (MOEKD_HAVE_MPI is OFF), the
# dist headers still work single-process and the mpirun tests are not registered.
# MOEKD_MPIRUN is the launcher the tests use (FindMPI's MPIEXEC_EXECUTABLE).
option(MOEKD_MPI "Build the Open MPI backend of moekd/dist when MPI is found" ON)
set(MOEKD_HAVE_MPI OFF)
if(MOEKD_MPI)
  find_package(MPI COMPONENTS CXX QUIET)
  if(MPI_CXX_FOUND)
    set(MOEKD_HAVE_MPI ON)
    add_library(moekd_mpi INTERFACE)
    add_library(moekd::mpi ALIAS moekd_mpi)
    target_link_libraries(moekd_mpi INTERFACE MPI::MPI_CXX)
    target_compile_definitions(moekd_mpi INTERFACE MOEKD_HAVE_MPI=1)
    # FindMPI's mpiexec (/usr/bin/...): an mpirun found as /bin/mpirun (usr-merge) makes Open MPI
    # guess the prefix "/" and refuse to start.
    if(NOT MOEKD_MPIRUN OR MOEKD_MPIRUN MATCHES "^/bin/")
      set(MOEKD_MPIRUN "${MPIEXEC_EXECUTABLE}" CACHE FILEPATH "MPI launcher for the mpirun tests" FORCE)
    endif()
    message(STATUS "moekd: MPI ${MPI_CXX_VERSION} found; moekd::mpi available; launcher: ${MOEKD_MPIRUN}")
  else()
    message(STATUS "moekd: MPI not found (apt-get install libopenmpi-dev openmpi-bin); moekd/dist runs single-process only")
  endif()
endif()

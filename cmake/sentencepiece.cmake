# sentencepiece.cmake — finds SentencePiece (Debian libsentencepiece-dev) once for the whole build
# and defines moekd_sentencepiece (INTERFACE: include path + libsentencepiece_train +
# libsentencepiece) when found. Used by the tokenizer test and the translation example, which are
# skipped with a warning where it is missing. pkg-config first, then find_path/find_library.
if(TARGET moekd_sentencepiece)
  return()
endif()
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(MOEKD_SPM QUIET IMPORTED_TARGET sentencepiece)
endif()
if(TARGET PkgConfig::MOEKD_SPM)
  add_library(moekd_sentencepiece INTERFACE)
  target_link_libraries(moekd_sentencepiece INTERFACE PkgConfig::MOEKD_SPM)
else()
  find_path(MOEKD_SPM_INCLUDE sentencepiece_processor.h)
  find_library(MOEKD_SPM_LIB sentencepiece)
  find_library(MOEKD_SPM_TRAIN_LIB sentencepiece_train)
  if(MOEKD_SPM_INCLUDE AND MOEKD_SPM_LIB AND MOEKD_SPM_TRAIN_LIB)
    add_library(moekd_sentencepiece INTERFACE)
    target_include_directories(moekd_sentencepiece INTERFACE ${MOEKD_SPM_INCLUDE})
    target_link_libraries(moekd_sentencepiece INTERFACE ${MOEKD_SPM_TRAIN_LIB} ${MOEKD_SPM_LIB})
  elseif(MOEKD_REQUIRE_SENTENCEPIECE)  # scripts/test.sh: a missing library must not skip tests silently
    message(FATAL_ERROR "moekd: SentencePiece not found (apt-get install libsentencepiece-dev) and "
                        "MOEKD_REQUIRE_SENTENCEPIECE is ON")
  else()
    message(WARNING "moekd: SentencePiece not found (apt-get install libsentencepiece-dev, or run "
                    "scripts/deps.sh): tokenizer_test and the tsjt_wmt example are not built")
  endif()
endif()

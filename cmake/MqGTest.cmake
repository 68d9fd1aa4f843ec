# GoogleTest: the system package where there is one (Debian: libgtest-dev); otherwise a source
# tree given as MQ_GTEST_SOURCE_DIR (the GPU machine has none installed, so its build carries
# Debian's /usr/src/googletest).
find_package(GTest QUIET)
if(NOT GTest_FOUND)
  if(MQ_GTEST_SOURCE_DIR)
    set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
    add_subdirectory(${MQ_GTEST_SOURCE_DIR} ${CMAKE_BINARY_DIR}/googletest EXCLUDE_FROM_ALL)
    add_library(GTest::gtest ALIAS gtest)
    add_library(GTest::gtest_main ALIAS gtest_main)
    add_library(GTest::gmock ALIAS gmock)
  else()
    message(FATAL_ERROR "GoogleTest not found: install libgtest-dev or set MQ_GTEST_SOURCE_DIR (or MQ_BUILD_TESTS=OFF)")
  endif()
endif()
include(GoogleTest)

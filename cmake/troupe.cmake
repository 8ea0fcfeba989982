# troupe_add_library(name SOURCES ... [PUBLIC_DEPS ...] [PRIVATE_DEPS ...]
#                    [TESTS ...] [PCH header ...])
# Defines target troupe_<name> (alias troupe::<name>) and, when tests are
# enabled, a unit-test binary troupe_<name>_test from the listed *.test.cpp
# files, registered with ctest under the label "unit". PCH names heavy
# third-party headers (CAF's take ~7 s per file) to precompile once for
# the library and its tests.
function(troupe_add_library name)
  cmake_parse_arguments(arg "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS;TESTS;PCH"
                        ${ARGN})
  add_library(troupe_${name} STATIC ${arg_SOURCES})
  add_library(troupe::${name} ALIAS troupe_${name})
  target_include_directories(troupe_${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_compile_features(troupe_${name} PUBLIC cxx_std_17)
  target_link_libraries(troupe_${name} PUBLIC ${arg_PUBLIC_DEPS}
                                       PRIVATE ${arg_PRIVATE_DEPS})
  troupe_set_warnings(troupe_${name})
  if(arg_PCH)
    target_precompile_headers(troupe_${name} PRIVATE ${arg_PCH})
  endif()
  if(TROUPE_BUILD_TESTS AND arg_TESTS)
    add_executable(troupe_${name}_test ${arg_TESTS}
                   ${PROJECT_SOURCE_DIR}/tests/catch_main.cpp)
    target_link_libraries(troupe_${name}_test PRIVATE troupe_${name}
                          Catch2::Catch2 ${arg_PRIVATE_DEPS})
    troupe_set_warnings(troupe_${name}_test)
    if(arg_PCH)
      target_precompile_headers(troupe_${name}_test PRIVATE ${arg_PCH})
    endif()
    add_test(NAME unit.${name} COMMAND troupe_${name}_test)
    set_tests_properties(unit.${name} PROPERTIES LABELS unit TIMEOUT 300)
  endif()
endfunction()

function(troupe_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  if(TROUPE_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

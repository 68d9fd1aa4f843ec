# mq-server links the engine's readers and job-spec check, never its numerical backends
# (server/CMakeLists.txt): fails when the binary defines or imports a symbol that only the engine
# proper (mq_engine: BLAS, the CPU forward, the quantization pipeline, CUDA) has.
#   cmake -DNM=<nm> -DBINARY=<mq-server> -P server_link_check.cmake
# The positive control (the same patterns found in a binary that does link the engine, mq-engine,
# -DCONTROL=<path>) keeps the check from passing because nm printed nothing.
foreach(var NM BINARY CONTROL)
  if(NOT ${var})
    message(FATAL_ERROR "server_link_check: -D${var}= is required")
  endif()
endforeach()

set(ENGINE_ONLY
  "mq::cpu::MambaForward("       # the CPU forward (cpu/mamba_forward.h)
  "mq::VimForward("              # the Vim forward
  "mq::quant::QuantizeModel("    # the quantization pipeline
  "cblas_sgemm"                  # OpenBLAS, defined or imported
  "mq::cuda::")                  # the CUDA backend

function(engine_symbols binary out)
  execute_process(COMMAND ${NM} -C ${binary} OUTPUT_VARIABLE symbols RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "server_link_check: ${NM} -C ${binary} failed (${rc}): ${err}")
  endif()
  set(found "")
  foreach(pattern IN LISTS ENGINE_ONLY)
    string(FIND "${symbols}" "${pattern}" at)
    if(NOT at EQUAL -1)
      list(APPEND found "${pattern}")
    endif()
  endforeach()
  set(${out} "${found}" PARENT_SCOPE)
endfunction()

engine_symbols(${CONTROL} control_found)
if(NOT control_found)
  message(FATAL_ERROR "server_link_check: none of the engine-only symbols appear in ${CONTROL}; the patterns are stale")
endif()
engine_symbols(${BINARY} found)
if(found)
  message(FATAL_ERROR "server_link_check: ${BINARY} contains engine-only symbols: ${found}")
endif()
message(STATUS "server_link_check: ${BINARY} has none of ${ENGINE_ONLY} (control ${CONTROL} has ${control_found})")

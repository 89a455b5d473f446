# engine/api: the gRPC server and client (nghttp2 + protobuf-c), the health service, and their
# tests: C unit tests for the wire rules and a client/server round trip, and a Python suite
# that drives a test server with the real grpcio client.
gw_add_library(gw_api
  ${PROJECT_SOURCE_DIR}/engine/api/grpc_wire.c
  ${PROJECT_SOURCE_DIR}/engine/api/grpc_addr.c
  ${PROJECT_SOURCE_DIR}/engine/api/grpc_call.c
  ${PROJECT_SOURCE_DIR}/engine/api/grpc_h2.c
  ${PROJECT_SOURCE_DIR}/engine/api/grpc_server.c
  ${PROJECT_SOURCE_DIR}/engine/api/grpc_health.c
  ${PROJECT_SOURCE_DIR}/engine/api/grpc_client.c)
target_link_libraries(gw_api PUBLIC gw_proto gw_common PkgConfig::NGHTTP2 PkgConfig::PROTOBUF_C
                      Threads::Threads)

# The test service's schema lives with the tests, not in proto/ (it is no part of the API).
set(GW_ECHO_PROTO_OUT ${PROJECT_BINARY_DIR}/tests/api/gen)
add_custom_command(
  OUTPUT ${GW_ECHO_PROTO_OUT}/tests/api/echo.pb-c.c ${GW_ECHO_PROTO_OUT}/tests/api/echo.pb-c.h
  COMMAND ${CMAKE_COMMAND} -E make_directory ${GW_ECHO_PROTO_OUT}
  COMMAND ${PROTOC_C} --proto_path=${PROJECT_SOURCE_DIR} --c_out=${GW_ECHO_PROTO_OUT} tests/api/echo.proto
  DEPENDS ${PROJECT_SOURCE_DIR}/tests/api/echo.proto
  COMMENT "protoc-c tests/api/echo.proto")
add_library(gw_echo_proto STATIC ${GW_ECHO_PROTO_OUT}/tests/api/echo.pb-c.c)
target_include_directories(gw_echo_proto PUBLIC ${GW_ECHO_PROTO_OUT})
target_link_libraries(gw_echo_proto PUBLIC PkgConfig::PROTOBUF_C)

add_executable(grpc_test_server ${PROJECT_SOURCE_DIR}/tests/api/grpc_test_server.c)
target_compile_options(grpc_test_server PRIVATE ${GW_WARN})
target_link_libraries(grpc_test_server PRIVATE gw_api gw_echo_proto)
set_target_properties(grpc_test_server PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)

gw_add_unit_test(test_grpc_wire SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_grpc_wire.c LIBS gw_api)
gw_add_unit_test(test_grpc_client SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_grpc_client.c
                 LIBS gw_api gw_echo_proto)

add_test(NAME api_grpc_python
         COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/api/test_grpc_server.py
                 --server $<TARGET_FILE:grpc_test_server>)
set_tests_properties(api_grpc_python PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120)

# Configure with CC=clang -DGODWIT_FUZZ=ON.
if(GODWIT_FUZZ)
  # The decoders are compiled into the target itself, instrumented; gw_api stays plain so that
  # the other binaries of a fuzz build still link.
  add_executable(fuzz_grpc_wire ${PROJECT_SOURCE_DIR}/tests/api/fuzz_grpc_wire.c
                 ${PROJECT_SOURCE_DIR}/engine/api/grpc_wire.c)
  target_include_directories(fuzz_grpc_wire PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_options(fuzz_grpc_wire PRIVATE ${GW_WARN} -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_grpc_wire PRIVATE -fsanitize=fuzzer,address,undefined)
  set_target_properties(fuzz_grpc_wire PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/fuzz)
endif()

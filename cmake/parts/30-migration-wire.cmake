# Lower layers of migration: the wire records and page codec (gw_codec), and the transports
# with the multi-stream sender/receiver built on them (gw_transport). Tests and the fuzz
# target of these layers are registered here too.
gw_add_library(gw_codec
  ${PROJECT_SOURCE_DIR}/engine/codec/wire.c
  ${PROJECT_SOURCE_DIR}/engine/codec/page_codec.c
  ${PROJECT_SOURCE_DIR}/engine/codec/digest.c)
target_link_libraries(gw_codec PUBLIC gw_proto gw_common PkgConfig::LZ4 PkgConfig::XXHASH)

gw_add_library(gw_transport
  ${PROJECT_SOURCE_DIR}/engine/transport/conn.c
  ${PROJECT_SOURCE_DIR}/engine/transport/tcp.c
  ${PROJECT_SOURCE_DIR}/engine/transport/rdma.c
  ${PROJECT_SOURCE_DIR}/engine/transport/handshake.c
  ${PROJECT_SOURCE_DIR}/engine/transport/mig_sender.c
  ${PROJECT_SOURCE_DIR}/engine/transport/mig_receiver.c
  ${PROJECT_SOURCE_DIR}/engine/transport/page_recv.c)
target_link_libraries(gw_transport PUBLIC gw_codec gw_proto gw_common Threads::Threads
  PkgConfig::OPENSSL PkgConfig::IBVERBS PkgConfig::RDMACM)

gw_add_unit_test(test_codec SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_codec.c LIBS gw_codec)
gw_add_unit_test(test_wire SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_wire.c LIBS gw_transport)
gw_add_unit_test(test_transport SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_transport.c
  ${PROJECT_SOURCE_DIR}/tests/unit/mig_harness.c LIBS gw_transport)
gw_add_unit_test(test_transport_commit SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_transport_commit.c
  ${PROJECT_SOURCE_DIR}/tests/unit/mig_harness.c LIBS gw_transport)

# Configure with CC=clang -DGODWIT_FUZZ=ON; the codec is instrumented for coverage too.
if(GODWIT_FUZZ)
  target_compile_options(gw_codec PRIVATE -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined)
  # Whatever links the instrumented codec (the unit tests too) needs the sanitizer runtimes.
  target_link_options(gw_codec INTERFACE -fsanitize=address,undefined)
  add_executable(fuzz_wire_decoder ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_wire_decoder.c)
  target_compile_options(fuzz_wire_decoder PRIVATE ${GW_WARN} -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)
  target_link_options(fuzz_wire_decoder PRIVATE -fsanitize=fuzzer,address,undefined)
  target_compile_options(gw_transport PRIVATE -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined)
  target_link_libraries(fuzz_wire_decoder PRIVATE gw_transport gw_codec)
  set_target_properties(fuzz_wire_decoder PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/fuzz)
  # A short smoke run under ctest: new inputs go to the build tree, the seeds stay as they are
  # (tests/fuzz/make_wire_seeds.py writes them).
  file(MAKE_DIRECTORY ${PROJECT_BINARY_DIR}/fuzz/corpus-wire)
  add_test(NAME fuzz_wire_decoder_smoke
           COMMAND fuzz_wire_decoder -max_total_time=10 -max_len=20000
                   ${PROJECT_BINARY_DIR}/fuzz/corpus-wire ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/wire)
endif()

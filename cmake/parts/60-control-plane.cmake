# The control plane: godwitd (engine/daemon/), the godwit CLI (cli/), their tests
# (tests/daemon/) and the API benchmark (bench/bench_api.c, linked into godwit-bench here).
gw_add_library(gw_daemon
  ${PROJECT_SOURCE_DIR}/engine/daemon/config.c
  ${PROJECT_SOURCE_DIR}/engine/daemon/db.c
  ${PROJECT_SOURCE_DIR}/engine/daemon/proc.c
  ${PROJECT_SOURCE_DIR}/engine/daemon/vms.c
  ${PROJECT_SOURCE_DIR}/engine/daemon/supervisor.c
  ${PROJECT_SOURCE_DIR}/engine/daemon/jobs.c
  ${PROJECT_SOURCE_DIR}/engine/daemon/migrate_out.c
  ${PROJECT_SOURCE_DIR}/engine/daemon/migrate_in.c
  ${PROJECT_SOURCE_DIR}/engine/daemon/migport.c
  ${PROJECT_SOURCE_DIR}/engine/daemon/migport_hello.c
  ${PROJECT_SOURCE_DIR}/engine/daemon/service_vm.c
  ${PROJECT_SOURCE_DIR}/engine/daemon/service_job.c
  ${PROJECT_SOURCE_DIR}/engine/daemon/daemon.c)
# gw_runner_client, not gw_runner: the daemon talks to runners without linking the VM host.
target_link_libraries(gw_daemon PUBLIC gw_api gw_runner_client gw_proto gw_common PkgConfig::SQLITE3
                      PkgConfig::INIH Threads::Threads)

gw_add_executable(godwitd ${PROJECT_SOURCE_DIR}/engine/daemon/main.c)
target_link_libraries(godwitd PRIVATE gw_daemon)
add_dependencies(godwitd godwit-vm)

gw_add_executable(godwit
  ${PROJECT_SOURCE_DIR}/cli/main.c
  ${PROJECT_SOURCE_DIR}/cli/client.c
  ${PROJECT_SOURCE_DIR}/cli/pbjson.c
  ${PROJECT_SOURCE_DIR}/cli/cmd_vm.c
  ${PROJECT_SOURCE_DIR}/cli/cmd_job.c
  ${PROJECT_SOURCE_DIR}/cli/cmd_host.c)
target_include_directories(godwit PRIVATE ${PROJECT_SOURCE_DIR})
# gw_daemon for gw_read_token_file only; the CLI needs none of the daemon's threads.
target_link_libraries(godwit PRIVATE gw_daemon gw_api PkgConfig::INIH)

# ---- tests: C unit tests, then the API and CLI suites with the real grpcio client ----------
gw_add_unit_test(test_daemon_config SOURCES ${PROJECT_SOURCE_DIR}/tests/daemon/test_daemon_config.c LIBS gw_daemon)
gw_add_unit_test(test_daemon_db SOURCES ${PROJECT_SOURCE_DIR}/tests/daemon/test_daemon_db.c LIBS gw_daemon)
add_test(NAME daemon_api
         COMMAND /usr/bin/python3 -W ignore ${PROJECT_SOURCE_DIR}/tests/daemon/test_api.py ${PROJECT_BINARY_DIR})
add_test(NAME cli_commands
         COMMAND /usr/bin/python3 -W ignore ${PROJECT_SOURCE_DIR}/tests/daemon/test_cli.py ${PROJECT_BINARY_DIR})
set_tests_properties(daemon_api cli_commands PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180)

# godwit-bench api (bench/bench_api.c): added to the benchmark binary from here, so that the
# bench builds unchanged when this part is switched off.
target_sources(godwit-bench PRIVATE ${PROJECT_SOURCE_DIR}/bench/bench_api.c)
target_link_libraries(godwit-bench PRIVATE gw_api)
target_compile_definitions(godwit-bench PRIVATE GW_BENCH_API)
add_dependencies(godwit-bench godwitd)
gw_add_unit_test(test_migport_hello SOURCES ${PROJECT_SOURCE_DIR}/tests/daemon/test_migport_hello.c LIBS gw_daemon)

# Configure with CC=clang -DGODWIT_FUZZ=ON: the decoder is compiled into the target itself,
# instrumented (gw_daemon stays plain); tests/fuzz/run_fuzzers.sh runs every fuzz_* briefly.
if(GODWIT_FUZZ)
  add_executable(fuzz_migport_hello ${PROJECT_SOURCE_DIR}/tests/daemon/fuzz_migport_hello.c
                 ${PROJECT_SOURCE_DIR}/engine/daemon/migport_hello.c)
  target_include_directories(fuzz_migport_hello PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_options(fuzz_migport_hello PRIVATE ${GW_WARN} -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_migport_hello PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_migport_hello PRIVATE gw_daemon)
  set_target_properties(fuzz_migport_hello PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/fuzz)
  add_dependencies(gw_fuzzers fuzz_migport_hello)
endif()

# The two commands of the README, and a few more for developers.
#   make demo   the main job: a live VM, suspended to a file and resumed (grows with the project)
#   make test   the whole suite, built with AddressSanitizer + UBSan; then the unit tests and
#               the daemon and runner integration tests again with ThreadSanitizer. Tests run
#               two at a time (JOBS): most of them wait on guests, sockets and timeouts, and the
#               whole suite must fit in 20 minutes on 2 cores. COST in the CMakeLists starts
#               the longest first, so that no long one is left to run alone at the end.
# Both install missing Debian packages first (scripts/deps; fast when all is present).
BUILD      ?= build
TEST_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
TSAN_BUILD ?= build-tsan
JOBS       ?= 2

.PHONY: all deps build test demo bench fuzz clean

all: build

deps:
	@scripts/deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
	@cmake --build $(BUILD) -j$(JOBS)

# libFuzzer targets need clang; the suite runs each briefly (tests/fuzz).
fuzz: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DGODWIT_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
	@cmake --build $(FUZZ_BUILD) -j$(JOBS) --target gw_fuzzers

test: deps fuzz
	@cmake -S . -B $(TEST_BUILD) -DGODWIT_SANITIZE=ON -DGODWIT_TEST_HOOKS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGODWIT_FUZZ_DIR=$(CURDIR)/$(FUZZ_BUILD) > /dev/null
	@cmake --build $(TEST_BUILD) -j$(JOBS)
	@if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then echo "test: /dev/kvm is usable: the VM tests run"; \
	 else echo "test: no usable /dev/kvm on this machine: every test that runs a VM is skipped (the others run)"; fi
	@cd $(TEST_BUILD) && ctest -j$(JOBS) --output-on-failure
	@cmake -S . -B $(TSAN_BUILD) -DGODWIT_TSAN=ON -DGODWIT_TEST_HOOKS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
	@cmake --build $(TSAN_BUILD) -j$(JOBS)
	@cd $(TSAN_BUILD) && TSAN_OPTIONS="halt_on_error=1 exitcode=66 suppressions=$(CURDIR)/tests/tsan.supp" ctest -j$(JOBS) --output-on-failure -L tsan

demo: build
	@scripts/demo.sh $(BUILD)

bench: build
	@$(BUILD)/godwit-bench vm --memory 256M --ws 64M --rate 32M --seconds 3 --json
	@$(BUILD)/godwit-bench snapshot --memory 1G --ws 512M --rate 32M --json
	@$(BUILD)/godwit-bench migrate --memory 1G --ws 512M --rate 0 --pattern random --json
	@$(BUILD)/godwit-bench migrate --memory 1G --ws 256M --rate 64M --pattern random --json
	@$(BUILD)/godwit-bench api --seconds 5 --json

clean:
	rm -rf $(BUILD) $(TEST_BUILD) $(FUZZ_BUILD) $(TSAN_BUILD)

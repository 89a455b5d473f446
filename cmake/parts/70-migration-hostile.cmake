# A hostile peer against the real migration runners: an evil source (Python, speaking the wire
# protocol of docs/migration-wire.md) against `godwit-vm incoming`, and an evil destination
# against a source runner. Every hostile input must be refused with its own reason, exit 1,
# and start no VM.
add_test(NAME integration_migration_hostile
         COMMAND /usr/bin/python3 -W ignore ${PROJECT_SOURCE_DIR}/tests/integration/test_migration_hostile.py
                 $<TARGET_FILE:godwit-vm>)
set_tests_properties(integration_migration_hostile PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)

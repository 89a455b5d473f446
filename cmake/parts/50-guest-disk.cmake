# The disk guest workload (guest/workload_disk.c) against the virtio-blk device: run, image
# format, save/restore with the disk, and a corrupted block caught by the restored guest.
add_test(NAME integration_disk
         COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/integration/test_disk.py $<TARGET_FILE:godwit-vm>)
set_tests_properties(integration_disk PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180)

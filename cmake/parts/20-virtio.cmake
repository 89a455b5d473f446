# virtio-mmio block device (host side): split virtqueues, the mmio transport, virtio-blk.
gw_add_library(gw_virtio
  ${PROJECT_SOURCE_DIR}/engine/vm/virtqueue.c
  ${PROJECT_SOURCE_DIR}/engine/vm/virtio_mmio.c
  ${PROJECT_SOURCE_DIR}/engine/vm/virtio_blk.c)
target_link_libraries(gw_virtio PUBLIC gw_guest_mem gw_proto gw_common)

gw_add_unit_test(test_virtqueue SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_virtqueue.c
                 LIBS gw_virtio)
gw_add_unit_test(test_virtio_blk SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/test_virtio_blk.c
                 LIBS gw_virtio)

/* Version of the saved-state format. Major = value / 100: a reader accepts any minor of its
 * own major (fields are only added), and rejects another major with a clear error. */
#ifndef GW_VM_STATE_FORMAT_H
#define GW_VM_STATE_FORMAT_H

#define GW_STATE_FORMAT_VERSION 100u
#define GW_VERSION_STRING "0.1.0"

#endif

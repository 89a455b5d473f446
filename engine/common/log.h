/* One-line log events on stderr, each tagged with a level and, where known, the VM and job
 * they belong to. Levels below the process-wide threshold cost one comparison. */
#ifndef GW_COMMON_LOG_H
#define GW_COMMON_LOG_H

enum gw_log_level { GW_LOG_DEBUG = 0, GW_LOG_INFO = 1, GW_LOG_WARN = 2, GW_LOG_ERROR = 3 };

/* Sets the threshold (default INFO; GODWIT_LOG=debug|info|warn|error overrides at first use). */
void gw_log_set_level(enum gw_log_level level);
/* Sets a tag printed on every line of this process, e.g. "vm=web1"; NULL clears it. */
void gw_log_set_tag(const char *tag);

void gw_log(enum gw_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define gw_debug(...) gw_log(GW_LOG_DEBUG, __VA_ARGS__)
#define gw_info(...) gw_log(GW_LOG_INFO, __VA_ARGS__)
#define gw_warn(...) gw_log(GW_LOG_WARN, __VA_ARGS__)
#define gw_error(...) gw_log(GW_LOG_ERROR, __VA_ARGS__)

#endif

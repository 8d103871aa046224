/* log: levelled, structured log lines (json or text) on stderr, with secret redaction. */
#ifndef HF_LOG_H
#define HF_LOG_H

#include <stdbool.h>
#include "util.h"

typedef enum { HF_LOG_DEBUG, HF_LOG_INFO, HF_LOG_WARN, HF_LOG_ERROR } hf_log_level;
typedef enum { HF_LOG_JSON, HF_LOG_TEXT } hf_log_format;

/* Parses "debug|info|warn|error" and "json|text"; false on anything else. */
bool hf_log_level_parse(const char *s, hf_log_level *out);
bool hf_log_format_parse(const char *s, hf_log_format *out);

void hf_log_init(const char *program, hf_log_level level, hf_log_format format);
/* hf_log_init from the text of HOOKFLOW_LOG_LEVEL / HOOKFLOW_LOG_FORMAT (already checked by the
 * config table; anything else falls back to info / json). */
void hf_log_init_from_config(const char *program, const char *level, const char *format);
bool hf_log_enabled(hf_log_level level);

/* Sends log lines to fd instead of stderr (tests). */
void hf_log_set_fd(int fd);

/* Registers a secret value: any occurrence of it in a later log line is replaced by
 * "[redacted]". The log keeps its own copy. Values shorter than 4 bytes are ignored. */
void hf_log_register_secret(const char *secret, size_t len);
void hf_log_forget_secrets(void);

/* One log line: event is a short stable name ("request", "kafka.error"); then key/value string
 * pairs terminated by NULL. Values are escaped; secrets redacted. */
void hf_log_kv(hf_log_level level, const char *event, ...) __attribute__((sentinel));

/* One log line with a printf message in "msg". */
void hf_logf(hf_log_level level, const char *event, const char *fmt, ...) HF_PRINTF(3, 4);

#define hf_log_debug(ev, ...) hf_logf(HF_LOG_DEBUG, ev, __VA_ARGS__)
#define hf_log_info(ev, ...) hf_logf(HF_LOG_INFO, ev, __VA_ARGS__)
#define hf_log_warn(ev, ...) hf_logf(HF_LOG_WARN, ev, __VA_ARGS__)
#define hf_log_error(ev, ...) hf_logf(HF_LOG_ERROR, ev, __VA_ARGS__)

#endif

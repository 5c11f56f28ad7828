#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mmi_status.h"

const char *mmi_strerror(int code) {
  switch (code) {
#define MMI__STATUS_CASE(name, value, text) \
  case value:                               \
    return text;
    MMI_STATUS_TABLE(MMI__STATUS_CASE)
#undef MMI__STATUS_CASE
    default:
      return "unknown status";
  }
}

int mmi_error_set(mmi_error *err, int code, const char *fmt, ...) {
  if (err != NULL) {
    err->code = code;
    va_list args;
    va_start(args, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, args);
    va_end(args);
  }
  return code;
}

void mmi_error_clear(mmi_error *err) {
  if (err != NULL) {
    err->code = MMI_OK;
    err->message[0] = '\0';
  }
}

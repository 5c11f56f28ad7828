/* Status codes and error reporting shared by every mminference C entry point.
 *
 * Every function returns MMI_OK (0) or a negative code from the table below and, when the caller
 * passes a non-NULL `mmi_error`, writes a message naming the offending argument into it.
 * There is no global error state: the caller owns the `mmi_error`. */
#ifndef MMI_STATUS_H
#define MMI_STATUS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, description) */
#define MMI_STATUS_TABLE(X)                                                           \
  X(MMI_OK, 0, "success")                                                             \
  X(MMI_ERR_NULL_POINTER, -1, "a required pointer argument is NULL")                  \
  X(MMI_ERR_INVALID_SHAPE, -2, "a size or shape argument is invalid")                 \
  X(MMI_ERR_INVALID_VALUE, -3, "an index or parameter value is out of range")         \
  X(MMI_ERR_UNSORTED, -4, "an index list is not strictly increasing")                 \
  X(MMI_ERR_UNSUPPORTED, -5, "the combination of dtype / head dim / option is unsupported") \
  X(MMI_ERR_OUT_OF_MEMORY, -6, "a host or device allocation failed")                  \
  X(MMI_ERR_DEVICE, -7, "a CUDA runtime call failed")

typedef enum mmi_status {
#define MMI__STATUS_ENUM(name, value, text) name = value,
  MMI_STATUS_TABLE(MMI__STATUS_ENUM)
#undef MMI__STATUS_ENUM
} mmi_status;

enum { MMI_ERROR_MESSAGE_CAPACITY = 512 };

/* Caller-owned error record. `code` repeats the return value; `message` names the argument. */
typedef struct mmi_error {
  int code;
  char message[MMI_ERROR_MESSAGE_CAPACITY];
} mmi_error;

/* Static description of a status code ("unknown status" for values outside the table). */
const char *mmi_strerror(int code);

/* Fills `err` (if non-NULL) with `code` and a printf-style message; returns `code`. */
int mmi_error_set(mmi_error *err, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Resets `err` (if non-NULL) to MMI_OK with an empty message. */
void mmi_error_clear(mmi_error *err);

#ifdef __cplusplus
}
#endif

#endif /* MMI_STATUS_H */

/* Scalar conversions between float32 and the 16-bit storage types (private to the core). */
#ifndef MMI_DTYPE_CONVERT_H
#define MMI_DTYPE_CONVERT_H

#include <stdint.h>
#include <string.h>

static inline float mmi__bits_to_float(uint32_t bits) {
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

static inline uint32_t mmi__float_to_bits(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof bits);
  return bits;
}

static inline float mmi__bf16_to_float(uint16_t h) { return mmi__bits_to_float((uint32_t)h << 16); }

/* Round to nearest even; NaN stays NaN (quiet bit forced so truncation cannot yield infinity). */
static inline uint16_t mmi__float_to_bf16(float f) {
  uint32_t bits = mmi__float_to_bits(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return (uint16_t)(bits >> 16);
}

static inline float mmi__f16_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    if (mantissa == 0) return mmi__bits_to_float(sign);
    /* Subnormal half: value = mantissa * 2^-24, exact in float32. */
    const float magnitude = (float)mantissa * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1f) return mmi__bits_to_float(sign | 0x7f800000u | (mantissa << 13));
  return mmi__bits_to_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

/* Round to nearest even, with overflow to infinity and gradual underflow. */
static inline uint16_t mmi__float_to_f16(float f) {
  const uint32_t bits = mmi__float_to_bits(f);
  const uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
  const uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
  if (abs_bits >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
  if (abs_bits < 0x38800000u) {                                    /* below the smallest normal */
    const float magnitude = mmi__bits_to_float(abs_bits);
    /* Scale so the subnormal step 2^-24 becomes 1, then round to nearest even via float math. */
    const float scaled = magnitude * 16777216.0f;
    uint32_t q = (uint32_t)scaled;
    const float rest = scaled - (float)q;
    if (rest > 0.5f || (rest == 0.5f && (q & 1u))) ++q;
    return (uint16_t)(sign | q);
  }
  uint32_t rounded = abs_bits + 0xfffu + ((abs_bits >> 13) & 1u);
  return (uint16_t)(sign | ((rounded - (112u << 23)) >> 13));
}

#endif /* MMI_DTYPE_CONVERT_H */

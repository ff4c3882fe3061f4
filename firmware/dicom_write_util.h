// Small helpers shared by the writers of derived DICOM objects (SEG, overlay series, SR):
// DCMTK condition -> Status, fresh UIDs, Decimal String formatting.
#pragma once

#include <dcmtk/dcmdata/dctk.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "base/status.h"

namespace firmware {

/// kInternal "<object>: <what>: <DCMTK reason>" for a failed DCMTK call.
inline base::Status dcmtk_status(std::string_view object, const std::string& what, const OFCondition& cond) {
  return base::internal_error(std::string(object) + ": " + what + ": " + std::string(cond.text()));
}

/// A new UID under DCMTK's site root (PS3.5 9: at most 64 characters).
inline std::string new_dicom_uid() {
  char buf[100];
  return dcmGenerateUniqueIdentifier(buf, SITE_INSTANCE_UID_ROOT);
}

/// A Decimal String value (PS3.5 6.2: at most 16 characters) with as many digits as fit.
inline std::string format_ds(double v) {
  if (std::abs(v) < 1e-12) v = 0.0;
  char buf[64];
  for (int precision = 12; precision >= 4; --precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strlen(buf) <= 16) break;
  }
  return buf;
}

}  // namespace firmware

/// Evaluates a DCMTK call returning OFCondition; on failure returns dcmtk_status(object, what).
#define SB_DCMTK_CHECK(object, expr, what)                                          \
  do {                                                                              \
    const OFCondition sb_cond_ = (expr);                                            \
    if (sb_cond_.bad()) return ::firmware::dcmtk_status((object), (what), sb_cond_); \
  } while (0)

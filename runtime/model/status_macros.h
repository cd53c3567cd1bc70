// TM_ASSIGN(lhs, expr): evaluates an absl::StatusOr expression, returns its
// status from the enclosing function on error, else assigns the value.
// Internal to runtime/model (Debian's Abseil has no ASSIGN_OR_RETURN).
#pragma once

#define TM_ASSIGN(lhs, expr)                      \
  do {                                            \
    auto tm_value = (expr);                       \
    if (!tm_value.ok()) return tm_value.status(); \
    lhs = *tm_value;                              \
  } while (0)

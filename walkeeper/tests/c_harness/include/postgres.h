/*
 * Stand-in for PostgreSQL's postgres.h in the conformance harness: the few
 * c.h definitions walproposer_decide.c uses, so that it compiles without a
 * PostgreSQL source or install tree.
 */
#ifndef HARNESS_POSTGRES_H
#define HARNESS_POSTGRES_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint8_t uint8;
typedef uint32_t uint32;
typedef uint64_t uint64;
typedef int64_t int64;

#define Max(x, y) ((x) > (y) ? (x) : (y))
#define Min(x, y) ((x) < (y) ? (x) : (y))
#define Assert(condition) assert(condition)

#endif

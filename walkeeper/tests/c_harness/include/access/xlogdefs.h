/* Stand-in for PostgreSQL's access/xlogdefs.h in the conformance harness. */
#ifndef HARNESS_XLOGDEFS_H
#define HARNESS_XLOGDEFS_H

typedef uint64 XLogRecPtr;

#define InvalidXLogRecPtr 0

#endif

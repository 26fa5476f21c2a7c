/* archive_verify.h - `postern archive verify`: checks every archived file
 * against the hash chain written by the archive plugin. */
#ifndef POSTERN_ARCHIVE_VERIFY_H
#define POSTERN_ARCHIVE_VERIFY_H
#include <stdbool.h>
#include <stdio.h>

/* Prints each problem and a summary to out; returns the number of problems
 * (0 = intact), or -1 if the archive cannot be read at all. With
 * witness_log and witness_key (postern-witness's log and public key), every
 * signed checkpoint must verify and match the chain. The full-text index
 * is checked as run_user (a child, when this is root). */
int archive_verify(const char *dir, const char *witness_log, const char *witness_key, const char *run_user,
                   bool allow_nobody, FILE *out);

#endif

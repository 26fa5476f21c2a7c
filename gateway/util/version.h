/* version.h - the Postern release, shown by --version (and the package). */
#ifndef POSTERN_VERSION_H
#define POSTERN_VERSION_H
#define POSTERN_VERSION "0.5.0"
#endif

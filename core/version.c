#include "core/version.h"

#ifndef CG_VERSION
#define CG_VERSION "0.0.0"
#endif
#ifndef CG_FEATURES
#define CG_FEATURES "cpu"
#endif

const char *cg_version(void) { return CG_VERSION; }

const char *cg_features(void) { return CG_FEATURES; }

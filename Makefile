# cgrad build. `make` builds the library and the cgrad program; see README.md for every target.
# Optional parts (CUDA, cuBLASLt, NCCL, MPI, hwloc, cJSON, cmocka, OpenMP, PCRE2) are detected; what is
# missing is left out and named in one line, never an error. Force a part off with CUDA=0, MPI=0, ...
# SAN=1 builds everything with AddressSanitizer + UBSan into build/asan (CUDA and MPI left out there:
# ASan's shadow memory clashes with the CUDA driver's mappings, and OpenMPI's internals leak by design).

VERSION := 0.1.0
PREFIX ?= /usr/local
SAN ?= 0
ifeq ($(SAN),1)
BUILD ?= build/asan
CUDA := 0
MPI := 0
else
BUILD ?= build
endif

CC := gcc
OPT ?= -O2
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC -g $(OPT) -I. -MMD -MP
LDLIBS_BASE := -lm -lpthread -ldl

ifeq ($(SAN),1)
CFLAGS_BASE += -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS_SAN := -fsanitize=address,undefined
endif

# ---------------------------------------------------------------- feature detection
have = $(if $(filter 0,$($(1))),,$(2))

OPENMP_OK := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo yes)
HAVE_OPENMP := $(call have,OPENMP,$(OPENMP_OK))

NVCC_PATH := $(or $(shell command -v nvcc 2>/dev/null),$(wildcard /usr/local/cuda/bin/nvcc))
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(realpath $(NVCC_PATH)))
CUDA_LIBDIR := $(firstword $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/targets/x86_64-linux/lib))
HAVE_CUDA := $(call have,CUDA,$(and $(NVCC_PATH),$(wildcard $(CUDA_LIBDIR)/libcudart.so)))
HAVE_CUBLASLT := $(if $(HAVE_CUDA),$(wildcard $(CUDA_LIBDIR)/libcublasLt.so))
NCCL_INC := $(firstword $(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h /usr/local/include/nccl.h))
NCCL_LIB := $(firstword $(wildcard $(CUDA_HOME)/lib/libnccl.so $(CUDA_LIBDIR)/libnccl.so /usr/lib/x86_64-linux-gnu/libnccl.so /usr/local/lib/libnccl.so))
HAVE_NCCL := $(if $(HAVE_CUDA),$(call have,NCCL,$(and $(NCCL_INC),$(NCCL_LIB))))
MPICC := $(shell command -v mpicc 2>/dev/null)
HAVE_MPI := $(call have,MPI,$(MPICC))
HAVE_HWLOC := $(call have,HWLOC,$(shell pkg-config --exists hwloc 2>/dev/null && echo yes))
HAVE_CJSON := $(call have,CJSON,$(or $(shell pkg-config --exists libcjson 2>/dev/null && echo yes),$(wildcard /usr/include/cjson/cJSON.h)))
HAVE_CMOCKA := $(shell pkg-config --exists cmocka 2>/dev/null && echo yes)
HAVE_PCRE2 := $(call have,PCRE2,$(shell pkg-config --exists libpcre2-8 2>/dev/null && echo yes))

FEATURE_CFLAGS :=
FEATURE_LIBS :=
ON := cpu
OFF :=
ifneq ($(HAVE_OPENMP),)
FEATURE_CFLAGS += -fopenmp -DCG_HAVE_OPENMP
FEATURE_LIBS += -fopenmp
ON += openmp
else
OFF += openmp
FEATURE_CFLAGS += -Wno-unknown-pragmas
endif
ifneq ($(HAVE_CUDA),)
FEATURE_CFLAGS += -DCG_HAVE_CUDA -I$(CUDA_HOME)/include
FEATURE_LIBS += -L$(CUDA_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) -lcudart -lstdc++
ON += cuda
else
OFF += cuda
endif
ifneq ($(HAVE_CUBLASLT),)
FEATURE_CFLAGS += -DCG_HAVE_CUBLASLT
FEATURE_LIBS += -lcublasLt -lcublas
ON += cublaslt
else
OFF += cublaslt
endif
ifneq ($(HAVE_NCCL),)
FEATURE_CFLAGS += -DCG_HAVE_NCCL -I$(dir $(NCCL_INC))
FEATURE_LIBS += -L$(dir $(NCCL_LIB)) -Wl,-rpath,$(dir $(NCCL_LIB)) -lnccl
ON += nccl
else
OFF += nccl
endif
ifneq ($(HAVE_MPI),)
FEATURE_CFLAGS += -DCG_HAVE_MPI $(shell $(MPICC) --showme:compile 2>/dev/null)
FEATURE_LIBS += $(shell $(MPICC) --showme:link 2>/dev/null)
ON += mpi
else
OFF += mpi
endif
ifneq ($(HAVE_HWLOC),)
FEATURE_CFLAGS += -DCG_HAVE_HWLOC $(shell pkg-config --cflags hwloc)
FEATURE_LIBS += $(shell pkg-config --libs hwloc)
ON += hwloc
else
OFF += hwloc
endif
ifneq ($(HAVE_CJSON),)
FEATURE_CFLAGS += -DCG_HAVE_CJSON
FEATURE_LIBS += -lcjson
ON += cjson
else
OFF += cjson
endif
ifneq ($(HAVE_PCRE2),)
FEATURE_CFLAGS += -DCG_HAVE_PCRE2 $(shell pkg-config --cflags libpcre2-8)
FEATURE_LIBS += $(shell pkg-config --libs libpcre2-8)
ON += pcre2
else
OFF += pcre2
endif

CFLAGS := $(CFLAGS_BASE) $(FEATURE_CFLAGS) -DCG_VERSION='"$(VERSION)"' -DCG_FEATURES='"$(strip $(ON))"' $(EXTRA_CFLAGS)
LDLIBS := $(FEATURE_LIBS) $(LDLIBS_BASE) $(LDFLAGS_SAN)

NVCC := $(NVCC_PATH)
# sm_90 machine code for Hopper plus compute_80 PTX, which the driver JIT-compiles for any GPU from Ampere on.
CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=compute_80
NVCCFLAGS := -std=c++17 -O3 $(CUDA_ARCH) -I. -Xcompiler -fPIC,-Wall,-Wextra,-Werror \
             -DCG_HAVE_CUDA $(if $(HAVE_CUBLASLT),-DCG_HAVE_CUBLASLT) $(if $(HAVE_NCCL),-DCG_HAVE_NCCL -I$(dir $(NCCL_INC))) -MMD -MP

# ---------------------------------------------------------------- sources
LIB_DIRS := core autograd models optim rl
LIB_SRCS := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
CUDA_SRCS := $(if $(HAVE_CUDA),$(wildcard cuda/*.cu))
# cuda/*.c hold the host-side glue that is compiled whatever the build (the stubs when CUDA is off).
CUDA_HOST_SRCS := $(wildcard cuda/*.c)
TOOL_SRCS := $(wildcard tools/*.c)
TEST_SRCS := $(wildcard tests/test_*.c)
BENCH_SRCS := $(wildcard bench/bench_*.c)
EXAMPLE_SRCS := $(wildcard tools/examples/*.c)

LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o) $(CUDA_HOST_SRCS:%.c=$(BUILD)/obj/%.o) $(CUDA_SRCS:%.cu=$(BUILD)/obj/%.cu.o)
TOOL_OBJS := $(TOOL_SRCS:%.c=$(BUILD)/obj/%.o)
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)
EXAMPLE_BINS := $(EXAMPLE_SRCS:tools/examples/%.c=$(BUILD)/examples/%)

STATIC_LIB := $(BUILD)/lib/libcgrad.a
SHARED_LIB := $(BUILD)/lib/libcgrad.so
CGRAD := $(BUILD)/bin/cgrad

.PHONY: all lib test test-run test-full test-gpu bench bench-train bench-gpu run deps clean install features help fuzz
.DEFAULT_GOAL := all

all: features lib $(CGRAD) $(EXAMPLE_BINS)
lib: $(STATIC_LIB) $(SHARED_LIB)

# One line saying what this build has and what it left out.
features:
	@echo "cgrad $(VERSION): building with: $(strip $(ON))$(if $(strip $(OFF)),; left out: $(strip $(OFF)))$(if $(HAVE_CMOCKA),, (cmocka missing: no tests; run 'make deps'))"

# Quiet compile lines; V=1 shows the full commands.
Q := $(if $(filter 1,$(V)),,@)

# Objects depend on the flags they were compiled with: a feature that appears (a package installed since the
# last build) or a switch that changes rebuilds everything, never a half-old build.
FLAGS_FILE := $(BUILD)/flags.txt
FLAGS_NOW := $(CC) $(CFLAGS) | $(NVCCFLAGS) | $(FEATURE_LIBS)
ifneq ($(FLAGS_NOW),$(file <$(FLAGS_FILE)))
$(shell mkdir -p $(BUILD))
$(file >$(FLAGS_FILE),$(FLAGS_NOW))
endif

$(BUILD)/obj/%.o: %.c $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC    $<")
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.cu.o: %.cu $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  NVCC  $<")
	$(Q)$(NVCC) $(NVCCFLAGS) -c $< -o $@

# The shared library must resolve every symbol (no half-linked .so); the sanitizer runtime lives in the
# executables, so that build skips the check.
SO_LDFLAGS := -shared -Wl,-soname,libcgrad.so.0 $(if $(filter 1,$(SAN)),,-Wl,--no-undefined)

$(STATIC_LIB): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  AR    $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(SHARED_LIB): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD    $@")
	$(Q)$(CC) $(SO_LDFLAGS) -o $@ $^ $(LDLIBS)
	@ln -sf libcgrad.so $(dir $@)libcgrad.so.0

$(CGRAD): $(TOOL_OBJS) $(STATIC_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD    $@")
	$(Q)$(CC) -o $@ $(TOOL_OBJS) $(STATIC_LIB) $(LDLIBS)

# ---------------------------------------------------------------- tests
CMOCKA_CFLAGS := $(shell pkg-config --cflags cmocka 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)

$(BUILD)/tests/%: tests/%.c tests/test_util.h tests/grad_util.h $(STATIC_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TEST  $@")
	$(Q)$(CC) $(CFLAGS) $(CMOCKA_CFLAGS) -o $@ $< $(STATIC_LIB) $(CMOCKA_LIBS) $(LDLIBS)

# tests/test_bench_rl_step.c compiles the benchmark's source in (its smoke run is part of `make test`).
$(BUILD)/tests/test_bench_rl_step: bench/bench_rl_step.c

$(BUILD)/bench/%: bench/%.c $(STATIC_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  BENCH $@")
	$(Q)$(CC) $(CFLAGS) -O3 -o $@ $< $(STATIC_LIB) $(LDLIBS)

# Example drivers: built with everything else so they never rot.
$(BUILD)/examples/%: tools/examples/%.c $(STATIC_LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  EX    $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $< $(STATIC_LIB) $(LDLIBS)

tests: $(TEST_BINS) $(CGRAD) $(EXAMPLE_BINS)

# Runs every test binary of this build (TESTS= picks some: `make test-run TESTS="test_gemm"`).
test-run: tests
	@CGRAD_BIN=$(CGRAD) sh tests/run_tests.sh "$(BUILD)" $(if $(TESTS),$(TESTS),$(notdir $(TEST_BINS)))

ifeq ($(HAVE_CMOCKA),)
test:
	@echo "make test: cmocka is not installed (run 'make deps' as root, or apt-get install libcmocka-dev)" >&2; exit 1
else
# The suite twice: the optimised build, then the AddressSanitizer + UBSan build.
NPROC := $(shell nproc 2>/dev/null || echo 2)
test: features
	$(MAKE) --no-print-directory -j$(NPROC) test-run
	$(MAKE) --no-print-directory -j$(NPROC) SAN=1 test-run
endif

# Heavier checks (larger sizes, longer runs) on top of `make test`.
test-full:
	CG_TEST_FULL=1 $(MAKE) --no-print-directory test

# The whole suite on a GPU machine, where a missing GPU is a failure, not a skip (the CUDA tests live in
# test_cuda_*.c and a few others, e.g. test_determinism).
test-gpu: tests
	@CG_REQUIRE_GPU=1 CGRAD_BIN=$(CGRAD) sh tests/run_tests.sh "$(BUILD)" $(notdir $(TEST_BINS))

bench: $(BENCH_BINS) $(CGRAD)
	@for b in $(BENCH_BINS); do echo "== $$b"; $$b || exit 1; done

# The issue-6 training benchmark side by side: cgrad train on GPT-2 124M (bench/bench_train.c), then the same
# step in PyTorch (bench/torch_gpt2.py; skipped when python3 or torch is missing). Both skip without a GPU.
bench-train: $(BUILD)/bench/bench_train $(CGRAD)
	$(BUILD)/bench/bench_train --cgrad $(CGRAD)
	@if command -v python3 >/dev/null; then python3 bench/torch_gpt2.py; else echo "torch_gpt2: no python3: skipped"; fi

# Every GPU figure the issues ask for, cgrad then PyTorch, in one call on a GPU machine: the kernels
# (bench_cuda*, torch_ref.py), generation (bench_generate's issue case, torch_generate.py), the RL step
# (bench_rl_step LoRA and --full, torch_rl_step.py) and the GPT-2 training step (bench-train). Each part
# prints a skip line where there is no GPU or no torch.
bench-gpu: bench bench-train
	$(BUILD)/bench/bench_rl_step --full
	@if command -v python3 >/dev/null; then python3 bench/torch_ref.py && python3 bench/torch_generate.py --hf && \
	   python3 bench/torch_rl_step.py --hf && python3 bench/torch_rl_step.py --full; \
	 else echo "torch benches: no python3: skipped"; fi

# The default demo: a small transformer trained from scratch on CPU (SFT warm-up on generated arithmetic,
# then GRPO), held-out accuracy before and after, metrics and an SVG plot in rl_out/.
run: all
	$(CGRAD) rl

# libFuzzer on the parsers (needs clang): `make fuzz FUZZ_TARGET=safetensors|tokenizer FUZZ_SECONDS=60`.
FUZZ_SECONDS ?= 60
FUZZ_TARGET ?= safetensors
CLANG := $(or $(shell command -v clang 2>/dev/null),$(shell command -v clang-14 2>/dev/null))
fuzz:
	@test -n "$(CLANG)" || { echo "make fuzz: clang is not installed (apt-get install clang)"; exit 1; }
	@mkdir -p build/fuzz_corpus_$(FUZZ_TARGET)
	$(CLANG) -g -O1 -std=c11 -D_GNU_SOURCE -DCG_HAVE_CJSON -DCG_HAVE_PCRE2 -fsanitize=fuzzer,address,undefined -I. \
	  tests/fuzz_$(FUZZ_TARGET).c $(wildcard core/*.c) $(wildcard models/tokenizer*.c) \
	  -lcjson -lpcre2-8 -lm -lpthread -ldl -o build/fuzz_$(FUZZ_TARGET)
	build/fuzz_$(FUZZ_TARGET) -max_total_time=$(FUZZ_SECONDS) build/fuzz_corpus_$(FUZZ_TARGET) \
	  $(wildcard tests/fixtures/fuzz_seed_$(FUZZ_TARGET))

deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update && apt-get install -y build-essential pkg-config libcmocka-dev libhwloc-dev \
	    libopenmpi-dev openmpi-bin libcjson-dev libpcre2-dev; \
	else echo "make deps: run as root on a Debian/Ubuntu machine (apt-get)"; exit 1; fi

install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 $(STATIC_LIB) $(DESTDIR)$(PREFIX)/lib/libcgrad.a
	install -m 755 $(SHARED_LIB) $(DESTDIR)$(PREFIX)/lib/libcgrad.so.$(VERSION)
	ln -sf libcgrad.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libcgrad.so.0
	ln -sf libcgrad.so.0 $(DESTDIR)$(PREFIX)/lib/libcgrad.so
	install -m 755 $(CGRAD) $(DESTDIR)$(PREFIX)/bin/cgrad
	for h in cgrad.h $(wildcard $(addsuffix /*.h,$(LIB_DIRS) cuda)); do \
	  install -D -m 644 $$h $(DESTDIR)$(PREFIX)/include/cgrad/$$h; done
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' -e 's|@LIBS_PRIVATE@|$(strip $(LDLIBS))|' \
	  cgrad.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/cgrad.pc

clean:
	rm -rf build

help:
	@echo "targets: all lib test test-full test-gpu bench bench-train bench-gpu run deps install clean fuzz"

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

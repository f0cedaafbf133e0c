# doppel: `make` builds the library and bin/doppel-*; `make test` runs every test;
# `make asan` builds and tests with AddressSanitizer + UBSan; `make bench` times against PyTorch.
# CUDA=0 turns the CUDA backend off even where nvcc is found.

CC      ?= cc
BUILD   ?= build
BINDIR  ?= bin
OPT     ?= -O2 -march=x86-64-v2 -g
SAN     ?=
CFLAGS  := -std=gnu11 $(OPT) $(SAN) -fopenmp -Wall -Wextra -Werror -Wno-unused-parameter \
           -Icommon -MMD -MP -D_GNU_SOURCE
# OpenBLAS built for OpenMP shares our thread pool (the pthread build and OpenMP spin against each
# other on 2 cores); fall back to whichever libopenblas the alternatives system picks.
comma := ,
OPENBLAS_OMP := /usr/lib/x86_64-linux-gnu/openblas-openmp
BLAS_LIBS := $(if $(wildcard $(OPENBLAS_OMP)/libopenblas.so),-L$(OPENBLAS_OMP) -Wl$(comma)-rpath$(comma)$(OPENBLAS_OMP),) -lopenblas
# PLplot (plots in reports): what pkg-config says, else the plain library
PLPLOT_LIBS := $(or $(shell pkg-config --libs plplot 2>/dev/null),-lplplot)
LDLIBS  := $(BLAS_LIBS) -lzmq -lmsgpackc -lpng -ljpeg -lfftw3f $(PLPLOT_LIBS) -ljansson -llapacke -lm
LDFLAGS := $(SAN) -fopenmp -Wl,--undefined=blas_init  # always link common/blas.c's constructor

# ---- what is here ----
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA ?= $(if $(NVCC),1,0)
CU_SRCS := $(if $(filter 1,$(CUDA)),$(wildcard common/*.cu common/*/*.cu),)
$(info doppel: CPU build with OpenBLAS + OpenMP ($(CC)); CUDA: $(if $(filter 1,$(CUDA)),nvcc at $(NVCC) (sm_90 + PTX),off))
ifeq ($(CUDA),1)
CUDA_HOME := $(abspath $(dir $(NVCC))..)
CUDA_LIBDIR := $(firstword $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib))
# sm_90 machine code for the H100 plus PTX that newer GPUs compile at load time
NVCCFLAGS := -O2 -std=c++17 -Icommon -DDOPPEL_CUDA -MMD -MP -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_90,code=compute_90 -Xcompiler -Wall
CFLAGS  += -DDOPPEL_CUDA
LDLIBS  += -L$(CUDA_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) -lcufft -lcublas -lcudart -lstdc++
endif

LIB_SRCS  := $(wildcard common/*.c common/*/*.c)
LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/%.o) $(CU_SRCS:%.cu=$(BUILD)/%.o)
LIB       := $(BUILD)/libdoppel.a
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
TESTLIB   := $(BUILD)/tests/testlib.o $(BUILD)/tests/proc.o
STAGES    := $(patsubst %/main.c,%,$(wildcard loader/main.c encoder/main.c diffuser/main.c decoder/main.c validator/main.c))
TOOLS     := $(patsubst tools/%/main.c,%,$(wildcard tools/*/main.c))
BINS      := $(STAGES:%=$(BINDIR)/doppel-%) $(TOOLS:%=$(BINDIR)/doppel-%)
BENCH_BIN := $(BUILD)/bench/bench_cpu
BENCH_CUDA := $(BUILD)/bench/bench_cuda

.PHONY: all test test-cuda asan bench bench-cuda demo fixtures check-diffusers clean
.SECONDARY:  # keep object files between builds
all: $(LIB) $(BINS) $(TEST_BINS) $(BENCH_CUDA)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

# a stage's binary links every .c in its folder (main.c plus stage-specific files)
define stage_rule
$(BINDIR)/doppel-$(1): $(patsubst %.c,$(BUILD)/%.o,$(wildcard $(1)/*.c)) $(LIB)
	@mkdir -p $(BINDIR)
	$(CC) $(LDFLAGS) $$^ $(LDLIBS) -o $$@
endef
$(foreach s,$(STAGES),$(eval $(call stage_rule,$(s))))

$(BINDIR)/doppel-%: $(BUILD)/tools/%/main.o $(LIB)
	@mkdir -p $(BINDIR)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TESTLIB) $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BENCH_BIN): $(BUILD)/bench/bench_cpu.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BENCH_CUDA): $(BUILD)/bench/bench_cuda.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

test: all
	@DOPPEL_BIN=$(BINDIR) tests/run.sh $(BUILD)/tests

asan:
	$(MAKE) BUILD=build-asan BINDIR=build-asan/bin OPT="-O1 -g -fno-omit-frame-pointer" SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" test

bench: $(BENCH_BIN)
	@bench/run.sh $(BENCH_BIN)

# the whole thing on simulated people: data, VAE, UNet, generation, judge, score (pipelines/demo.sh;
# DEMO_ARGS="--data DIR ..." for your own spectrograms)
demo: all
	@BIN=$(BINDIR) pipelines/demo.sh $(DEMO_ARGS)

# the CUDA backend against the CPU, op by op and model by model (skips without a GPU)
test-cuda: $(BUILD)/tests/test_cuda
	@$(BUILD)/tests/test_cuda

# the UNet presets on the GPU next to diffusers on the same GPU (bench/cuda_run.sh)
bench-cuda: $(BENCH_CUDA)
	@bench/cuda_run.sh $(BENCH_CUDA)

# libFuzzer on the safetensors reader, then on the frame decoder, for 60 s each (FUZZ_TIME=s), seeded
# from copies of the corpora; crashes land in $(BUILD)/fuzz/ (add them to tests/corpus/safetensors/
# as bad_*.safetensors, frame-* ones to tests/corpus/frames/ as bad_fuzz_*.bin)
fuzz:
	@mkdir -p $(BUILD)/fuzz/corpus $(BUILD)/fuzz/corpus_frames
	clang -std=gnu11 -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Icommon \
	    tests/fuzz/fuzz_safetensors.c common/io/safetensors.c common/io/fileio.c common/check.c -ljansson \
	    -o $(BUILD)/fuzz/fuzz_safetensors
	cp tests/corpus/safetensors/*.safetensors $(BUILD)/fuzz/corpus/
	$(BUILD)/fuzz/fuzz_safetensors -max_total_time=$(or $(FUZZ_TIME),60) -max_len=4096 -dict=tests/fuzz/safetensors.dict \
	    -artifact_prefix=$(BUILD)/fuzz/ $(BUILD)/fuzz/corpus
	clang -std=gnu11 -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Icommon \
	    tests/fuzz/fuzz_frame.c common/wire/frame.c common/io/safetensors.c common/io/fileio.c common/check.c -lmsgpackc -ljansson \
	    -o $(BUILD)/fuzz/fuzz_frame
	cp tests/corpus/frames/*.bin $(wildcard tests/corpus/frames/fuzz/*) $(BUILD)/fuzz/corpus_frames/
	$(BUILD)/fuzz/fuzz_frame -max_total_time=$(or $(FUZZ_TIME),60) -max_len=4096 -dict=tests/fuzz/frame.dict \
	    -artifact_prefix=$(BUILD)/fuzz/frame- $(BUILD)/fuzz/corpus_frames
	@mkdir -p $(BUILD)/fuzz/corpus_png $(BUILD)/fuzz/corpus_jpeg
	for f in png jpeg; do \
	  clang -std=gnu11 -g -O1 -D_GNU_SOURCE -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=undefined -Icommon tests/fuzz/fuzz_$$f.c common/image/*.c common/io/fileio.c common/check.c \
	    -lpng -ljpeg -lm -o $(BUILD)/fuzz/fuzz_$$f || exit 1; \
	done
	cp tests/corpus/images/*.png $(BUILD)/fuzz/corpus_png/
	cp tests/corpus/images/*.jpg $(wildcard tests/corpus/images/*.jpeg) $(BUILD)/fuzz/corpus_jpeg/
	$(BUILD)/fuzz/fuzz_png -max_total_time=$(or $(FUZZ_TIME),60) -max_len=16384 -artifact_prefix=$(BUILD)/fuzz/png- $(BUILD)/fuzz/corpus_png
	$(BUILD)/fuzz/fuzz_jpeg -max_total_time=$(or $(FUZZ_TIME),60) -max_len=16384 -artifact_prefix=$(BUILD)/fuzz/jpeg- $(BUILD)/fuzz/corpus_jpeg

# regenerates tests/fixtures/ (needs PyTorch + diffusers; see tests/reference/README.md)
fixtures:
	@tests/reference/make_all.sh

# diffusers loads the folders doppel writes (needs the reference environment)
check-diffusers: $(BUILD)/tests/test_models
	@$(BUILD)/tests/test_models >/dev/null
	@$${PYTHON:-.venv-ref/bin/python} tests/reference/check_diffusers_load.py $(BUILD)/test-out

clean:
	rm -rf build build-asan bin

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

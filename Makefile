# Hyper TLS-passthrough relay.  `make` builds bin/hyper and bin/proxy,
# `make test` builds and runs every test, `make demo` runs the seed's demo
# (`make demo-cluster`: with two public and two private proxies on one Redis),
# `make deb` builds the Debian package (build/deb/).

PREFIX  ?= /usr/local
CC      ?= cc
V       ?= rel
VERSION := 0.1.0

# Debian packages the build, the tests and the demo need.
DEB_PACKAGES := gcc make pkg-config openssl curl jq parallel procps psmisc iproute2 python3 \
	liburing-dev libjson-c-dev libbsd-dev libcriterion-dev libevent-dev \
	libyaml-dev libssl-dev libhiredis-dev clang libclang-rt-14-dev prometheus redis-server

# Debian packages only `make deb` needs; it installs them itself, so that the
# build and the tests do not wait for them (a removed package whose
# configuration files are still there counts as missing).
DEB_PACKAGING := debhelper dpkg-dev help2man lintian
DEB_ARCH      := $(shell dpkg --print-architecture 2>/dev/null)
DEB_FILE      := build/deb/hyper-relay_$(VERSION)_$(DEB_ARCH).deb
DEB_MAINT     := $(shell sed -n 's/^Maintainer: //p' debian/control 2>/dev/null)
# What a package build leaves in debian/ (removed before each build, so that
# nothing is skipped or reused from an older one).
DEB_TMP       := debian/hyper-relay debian/.debhelper debian/changelog debian/files \
	debian/debhelper-build-stamp debian/*.substvars debian/*.debhelper debian/*.debhelper.log

PKGS    := liburing json-c libbsd libevent libevent_openssl libevent_pthreads yaml-0.1 openssl hiredis
WARN    := -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes -Wstrict-prototypes \
	-Wcast-qual -Wpointer-arith -Wformat=2 -Wundef -Wwrite-strings -Wno-unused-parameter
CFLAGS_rel  := -O2 -g
CFLAGS_asan := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
B       := build/$(V)
CFLAGS  ?=
ALL_CFLAGS = -std=gnu11 -D_GNU_SOURCE -DHP_VERSION='"$(VERSION)"' -Iinclude/common -Iinclude/hyper -Iinclude/proxy $(WARN) \
	$(CFLAGS_$(V)) $(CFLAGS) $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -MMD -MP
LDLIBS  = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm
LDFLAGS_asan := -fsanitize=address,undefined

LIB_SRC   := $(filter-out %/main.c,$(wildcard src/*/*.c))
LIB_OBJ   := $(LIB_SRC:%.c=$(B)/%.o)
LIB       := $(B)/libhp.a
TEST_SRC  := $(wildcard tests/unit/test_*.c)
TEST_BIN  := $(TEST_SRC:tests/unit/%.c=$(B)/tests/%)
EX_SRC    := $(wildcard examples/internal-server/*.c)
BINDIR    := $(if $(filter rel,$(V)),bin,$(B)/bin)

.PHONY: all deps examples test unit-test e2e-test certs demo demo-cluster run bench bench-quick fuzz fuzz-short clean distclean install \
	check-valgrind faults soak deb deb-deps
all: deps-check $(BINDIR)/hyper $(BINDIR)/proxy certs-check

deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

deps-check:
	@for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || { $(MAKE) --no-print-directory deps; break; }; done

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@rm -f $@
	@ar rcs $@ $^

$(BINDIR)/hyper: $(B)/src/hyper/main.o $(LIB)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS_$(V)) -o $@ $^ $(LDLIBS)

$(BINDIR)/proxy: $(B)/src/proxy/main.o $(LIB)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS_$(V)) -o $@ $^ $(LDLIBS)

examples: deps-check $(BINDIR)/internal-server
$(BINDIR)/internal-server: $(EX_SRC:%.c=$(B)/%.o) $(LIB)
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS_$(V)) -o $@ $^ $(LDLIBS)

$(B)/tests/%: tests/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	@echo "  CCLD    $@"
	@$(CC) $(ALL_CFLAGS) -o $@ $< $(LIB) $(LDFLAGS_$(V)) $(LDLIBS) -lcriterion

unit-bins: $(TEST_BIN)

# Benchmarks: each bench/*.c is one program (bench/run.sh drives them).
BENCH_BIN := $(patsubst bench/%.c,$(B)/bench/%,$(wildcard bench/*.c))
.PHONY: bench-bins
bench-bins: $(BENCH_BIN)
$(B)/bench/%: bench/%.c $(LIB)
	@mkdir -p $(dir $@)
	@echo "  CCLD    $@"
	@$(CC) $(ALL_CFLAGS) -o $@ $< $(LIB) $(LDFLAGS_$(V)) $(LDLIBS)
bench: examples bench-bins
	bench/run.sh
bench-quick: examples bench-bins
	bench/run.sh --quick

# Development certificates (SPEC section 7); generated, never committed.
# `make certs FORCE=1` replaces an existing set.
certs:
	scripts/make-certs.sh settings/dev $(if $(FORCE),--force)
certs-check:
	@[ -f settings/dev/certs/root.crt ] || scripts/make-certs.sh settings/dev

test: deps-check
	$(MAKE) --no-print-directory all examples unit-bins V=rel
	$(MAKE) --no-print-directory all examples unit-bins V=asan
	scripts/run-tests.sh

# Reliability (docs/reliability.md): valgrind on the whole chain, the fault
# suite, and a soak run of SOAK_SECONDS (default 600).
check-valgrind: all examples
	tests/valgrind/chain.sh
faults: all examples
	tests/faults/run.sh
soak: all examples
	tests/soak/run.sh

demo: all examples
	scripts/demo.sh demo
run: all examples
	scripts/demo.sh run
# Two public proxies on one Redis, two private proxies of one operator.
demo-cluster: all examples
	scripts/demo-cluster.sh

# libFuzzer targets: each tests/fuzz/fuzz_*.c names the sources it needs in a
# "fuzz-sources:" comment line and runs on a copy of tests/fuzz/corpus/<name>/.
FUZZ_SECONDS ?= 60
FUZZ_BIN := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_CFLAGS := -std=gnu11 -D_GNU_SOURCE -DHP_VERSION='"$(VERSION)"' -Iinclude/common -Iinclude/hyper -Iinclude/proxy -g -O1 -fno-omit-frame-pointer \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined

build/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz.h $(LIB_SRC) $(wildcard include/*/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -o $@ $< \
	    $$(sed -n 's/^.*fuzz-sources: //p' $<) $(LDLIBS)

fuzz: deps-check $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do n=$$(basename $$f); c=build/fuzz/corpus/$$n; \
	  rm -rf $$c; mkdir -p $$c; cp tests/fuzz/corpus/$$n/* $$c/ 2>/dev/null; \
	  echo "== $$n ($(FUZZ_SECONDS) s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=build/fuzz/$$n- -print_final_stats=1 \
	    $$c 2>build/fuzz/$$n.log || { tail -n 40 build/fuzz/$$n.log; exit 1; }; \
	  grep -E 'stat::number_of_executed_units|cov:' build/fuzz/$$n.log | tail -n 2; done
fuzz-short: deps-check
	FUZZ_SECONDS=10 scripts/fuzz-short.sh

# Builds (when needed) and copies; no package, certificate or settings step,
# so it is safe on a production host.
install: $(BINDIR)/hyper $(BINDIR)/proxy $(BINDIR)/internal-server
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $^ $(DESTDIR)$(PREFIX)/bin/

# Debian package: debian/rules reuses the release build (bin/) and `make install`.
# The changelog is written here so that the package version is VERSION.
deb-deps:
	@missing=""; for p in $(DEB_PACKAGING); do \
	  [ "$$(dpkg-query -W -f='$${Status}' $$p 2>/dev/null)" = "install ok installed" ] || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

deb: deps-check deb-deps
	@rm -rf $(DEB_TMP) build/deb
	@printf 'hyper-relay (%s) unstable; urgency=medium\n\n  * Package of the hyper-relay tree at version %s.\n\n -- %s  %s\n' \
	  '$(VERSION)' '$(VERSION)' '$(DEB_MAINT)' \
	  "$$(git log -1 --format=%cD 2>/dev/null || date -R)" >debian/changelog
	debian/rules binary
	@echo "  DEB     $(DEB_FILE)"

# clean: build output only.  distclean: also the development certificates and
# fingerprint records, the dev datastores (settings/dev/run) and the demo logs (run/).
clean:
	rm -rf build bin
	rm -rf $(DEB_TMP)

distclean: clean
	rm -rf run settings/dev/certs settings/dev/run settings/dev/directory/90-certificates.json

-include $(shell find build -name '*.d' 2>/dev/null)

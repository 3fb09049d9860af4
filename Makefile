# apicount — PGXS build.  Targets: all, install, test, demo, bench.
# The test/demo/bench targets install missing Debian packages, build and install the
# extension, and run a throwaway server as the unprivileged 'postgres' user.

MODULE_big = apicount
OBJS = \
	src/apicount.o \
	src/guc.o \
	src/normalize.o \
	src/strtab.o \
	src/counters.o \
	src/heavy.o \
	src/entry_table.o \
	src/pending.o \
	src/prefault.o \
	src/ingest.o \
	src/audited.o \
	src/string_memo.o \
	src/requests_am.o \
	src/requests_slot.o \
	src/readlock.o \
	src/flush.o \
	src/known_rows.o \
	src/worker.o \
	src/worker_txn.o \
	src/groupagg.o \
	src/live.o \
	src/latency_codec.o \
	src/latency_store.o \
	src/latency_sql.o \
	src/sources.o \
	src/filter.o

EXTENSION = apicount
DATA = sql/apicount--0.1.sql sql/apicount--0.1--0.2.sql sql/apicount--0.2--0.3.sql \
	sql/apicount--0.3--0.4.sql
SHLIB_LINK = -lm
PGFILEDESC = "apicount - real-time API request counters"

# pg_regress suites (sql/<name>.sql, expected/<name>.out); run by test/run_tests.sh
REGRESS = $(patsubst sql/%.sql,%,$(sort $(filter-out sql/apicount--%,$(wildcard sql/*.sql))))
REGRESS_OPTS = --temp-config=$(srcdir)/test/apicount.conf --no-locale --encoding=UTF8

PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
	-Wno-sign-compare -Wno-clobbered

# Which PostgreSQL: PG_CONFIG=/path/to/pg_config, or PG_MAJOR=18 (Debian's
# /usr/lib/postgresql/18, else test/pg_build.sh's build in $(APICOUNT_PG_CACHE)/18), else the
# pg_config on PATH, else Debian's default major (APICOUNT_DEFAULT_PG_MAJOR in test/common.sh).
APICOUNT_PG_CACHE ?= /var/cache/apicount/pg
ifneq ($(PG_MAJOR),)
PG_CONFIG ?= $(firstword $(wildcard /usr/lib/postgresql/$(PG_MAJOR)/bin/pg_config) $(APICOUNT_PG_CACHE)/$(PG_MAJOR)/bin/pg_config)
endif
PG_CONFIG ?= $(shell command -v pg_config >/dev/null 2>&1 && echo pg_config || echo $(firstword $(wildcard /usr/lib/postgresql/*/bin/pg_config) pg_config))
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)

ifeq ($(PGXS),)
# PGXS is missing on a fresh machine: 'make test' / 'make demo' install it first.
all install:
	$(PG_SELECT) bash test/ensure_deps.sh && $(MAKE) $@
else
include $(PGXS)
# PGXS does not track header dependencies: rebuild everything when a header changes
$(OBJS): $(wildcard $(srcdir)/src/*.h)
# VPATH builds (pg_buildext's build-N directories) need the objects' directory
$(OBJS): | objdir
.PHONY: objdir
objdir:
	@mkdir -p src

# apicount-ship (ship/), the access log shipper, goes into the bindir with the extension
all: ship-program
install: ship-install
clean: ship-clean
.PHONY: ship-program ship-install ship-clean
ship-program:
	$(MAKE) -C ship PG_CONFIG=$(PG_CONFIG)
ship-install: ship-program
	$(MAKE) -C ship install PG_CONFIG=$(PG_CONFIG)
ship-clean:
	$(MAKE) -C ship clean PG_CONFIG=$(PG_CONFIG)
endif

.PHONY: test test-package demo bench demo-stop
# make test [PG_MAJOR=18 | PG_CONFIG=...]: the PostgreSQL selected as in test/common.sh
PG_SELECT = $(if $(PG_MAJOR),PG_MAJOR='$(PG_MAJOR)') \
	$(if $(filter command line environment,$(origin PG_CONFIG)),PG_CONFIG='$(PG_CONFIG)')
test:
	$(PG_SELECT) bash test/run_tests.sh

# build the Debian package (debian/), install it, smoke-test it in a clean cluster
test-package:
	$(PG_SELECT) bash test/package.sh

demo:
	$(PG_SELECT) bash test/demo.sh

demo-stop:
	bash test/demo.sh stop

bench:
	$(PG_SELECT) bash bench/run.sh

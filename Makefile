# apicount — PGXS build.  Targets: all, install, test, demo, bench.
# The test/demo/bench targets install missing Debian packages, build and install the
# extension, and run a throwaway server as the unprivileged 'postgres' user.

MODULE_big = apicount
# src/ by stage, in the order a hit flows: ingest -> pending -> shmem counters -> worker flush
# -> tables; query reads counters and tables; common is used by every stage.  Headers are
# included by name: each folder is on the include path.
SRC_DIRS = common ingest shmem worker query
OBJS = \
	src/apicount.o \
	src/common/guc.o \
	src/common/normalize.o \
	src/common/prefault.o \
	src/common/latency_codec.o \
	src/ingest/requests_am.o \
	src/ingest/requests_slot.o \
	src/ingest/ingest.o \
	src/ingest/string_memo.o \
	src/ingest/audited.o \
	src/ingest/pending.o \
	src/ingest/sources.o \
	src/shmem/strtab.o \
	src/shmem/counters.o \
	src/shmem/heavy.o \
	src/shmem/entry_table.o \
	src/shmem/latency_store.o \
	src/shmem/readlock.o \
	src/shmem/preload.o \
	src/worker/flush.o \
	src/worker/flush_api.o \
	src/worker/flush_callers.o \
	src/worker/flush_heavy.o \
	src/worker/flush_columns.o \
	src/worker/flush_retention.o \
	src/worker/flush_sql.o \
	src/worker/known_rows.o \
	src/worker/worker.o \
	src/worker/worker_txn.o \
	src/query/groupagg.o \
	src/query/live.o \
	src/query/latency_sql.o \
	src/query/filter.o \
	src/query/window.o \
	src/query/tiers.o

EXTENSION = apicount
DATA = sql/apicount--0.1.sql sql/apicount--0.1--0.2.sql sql/apicount--0.2--0.3.sql \
	sql/apicount--0.3--0.4.sql sql/apicount--0.4--0.5.sql sql/apicount--0.5--0.6.sql sql/apicount--0.6--0.7.sql
SHLIB_LINK = -lm
PGFILEDESC = "apicount - real-time API request counters"

# pg_regress suites (sql/<name>.sql, expected/<name>.out); run by test/run_tests.sh
REGRESS = $(patsubst sql/%.sql,%,$(sort $(filter-out sql/apicount--%,$(wildcard sql/*.sql))))
REGRESS_OPTS = --temp-config=$(srcdir)/test/apicount.conf --no-locale --encoding=UTF8

PG_CPPFLAGS = $(addprefix -I$(srcdir)/src/,$(SRC_DIRS))
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
$(OBJS): $(wildcard $(srcdir)/src/*/*.h)
# VPATH builds (pg_buildext's build-N directories) need the objects' directory
$(OBJS): | objdir
.PHONY: objdir
objdir:
	@mkdir -p $(addprefix src/,$(SRC_DIRS))

# apicount-ship (ship/), the access log shipper, goes into the bindir with the extension
all: ship-program
install: ship-install
clean: ship-clean
.PHONY: ship-program ship-install ship-clean
# (a VPATH build, such as pg_buildext's build-N, builds it in its own ship/)
ifdef VPATH
SHIP_MAKE = mkdir -p ship && $(MAKE) -C ship -f $(abspath $(srcdir))/ship/Makefile \
	VPATH=$(abspath $(srcdir))/ship PG_CONFIG=$(PG_CONFIG)
else
SHIP_MAKE = $(MAKE) -C ship PG_CONFIG=$(PG_CONFIG)
endif
ship-program:
	$(SHIP_MAKE)
ship-install: ship-program
	$(SHIP_MAKE) install
ship-clean:
	$(SHIP_MAKE) clean
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

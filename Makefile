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
	src/sources.o

EXTENSION = apicount
DATA = sql/apicount--0.1.sql sql/apicount--0.1--0.2.sql sql/apicount--0.2--0.3.sql
SHLIB_LINK = -lm
PGFILEDESC = "apicount - real-time API request counters"

# pg_regress suites (sql/<name>.sql, expected/<name>.out); run by test/run_tests.sh
REGRESS = $(patsubst sql/%.sql,%,$(sort $(filter-out sql/apicount--%,$(wildcard sql/*.sql))))
REGRESS_OPTS = --temp-config=$(srcdir)/test/apicount.conf --no-locale --encoding=UTF8

PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
	-Wno-sign-compare -Wno-clobbered

PG_CONFIG ?= $(shell command -v pg_config >/dev/null 2>&1 && echo pg_config || echo /usr/lib/postgresql/15/bin/pg_config)
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)

ifeq ($(PGXS),)
# PGXS is missing on a fresh machine: 'make test' / 'make demo' install it first.
all install:
	bash test/ensure_deps.sh && $(MAKE) $@
else
include $(PGXS)
# PGXS does not track header dependencies: rebuild everything when a header changes
$(OBJS): $(wildcard src/*.h)

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

.PHONY: test demo bench demo-stop
test:
	bash test/run_tests.sh

demo:
	bash test/demo.sh

demo-stop:
	bash test/demo.sh stop

bench:
	bash bench/run.sh

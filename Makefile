# Postern - top-level build. `make` builds the daemon and CLI, `make test`
# runs unit and integration tests, `make run` starts the gateway on loopback
# with policies/postern.conf, `make deps` installs Debian packages.
CC      ?= cc
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Igateway
LDLIBS  += -lpthread
BUILD   := build
SAN     ?=
ifeq ($(SAN),1)
  CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=address,undefined
  BUILD   := build-san
endif

CORE_SRCS := buf.c log.c netaddr.c config.c smtp_parse.c data_reader.c event.c workers.c \
             spool.c retry.c queue.c delivery.c smtp_server.c privs.c
CORE_OBJS := $(addprefix $(BUILD)/,$(CORE_SRCS:.c=.o))
UNIT_TESTS := test_smtp_parse test_data_reader test_spool test_retry test_config

.PHONY: all clean test unit integration run deps bench
all: $(BUILD)/posternd $(BUILD)/postern

$(BUILD)/%.o: gateway/%.c gateway/*.h | $(BUILD)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD):
	mkdir -p $(BUILD)

$(BUILD)/libpostern.a: $(CORE_OBJS)
	ar rcs $@ $^

$(BUILD)/posternd: $(BUILD)/main.o $(BUILD)/libpostern.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/postern: $(BUILD)/postern_cli.o $(BUILD)/libpostern.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/test_%: tests/unit/test_%.c $(BUILD)/libpostern.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libpostern.a -lcmocka $(LDLIBS)

unit: $(addprefix $(BUILD)/,$(UNIT_TESTS))
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $(BUILD)/$$t; done

integration: all
	POSTERN_BUILD=$(BUILD) tests/integration/run.sh

# Unit tests, then integration tests against real peers, all under ASan/UBSan.
test: deps-check
	$(MAKE) SAN=1 unit
	$(MAKE) SAN=1 integration

deps-check:
	@tests/check-deps.sh

deps:
	./tools/install-deps.sh

run: deps all
	./tools/run-local.sh $(BUILD)

bench: all
	bench/relay-vs-postfix.sh $(BUILD)

clean:
	rm -rf build build-san

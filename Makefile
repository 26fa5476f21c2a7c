# Postern - top-level build. `make` builds the daemon and CLI, `make test`
# runs unit and integration tests, `make run` starts the gateway on loopback
# with policies/postern.conf, `make deps` installs Debian packages.
CC      ?= cc
CFLAGS  ?= -O2 -g
# gateway/ in folders by role, lowest first; a folder includes only headers of
# its own and lower ones (tools/check-layers.py, run by `make test`)
LAYERS   := util core events chain mta queue smtpd archive admin
PROGRAMS := cli bin
INCLUDES := $(addprefix -Igateway/,$(LAYERS) $(PROGRAMS)) -Ilua -Iplugins -I/usr/include/lua5.4
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes $(INCLUDES)
LDLIBS  += -lldap -llber -lsqlite3 -lhiredis -lrabbitmq -lunbound -llua5.4 -lsasl2 -lmicrohttpd -ljansson -lcrypt -lssl -lcrypto -lz -ldl -lpthread
BUILD   := build
PREFIX  ?= /usr/local
CFLAGS  += -DPOSTERN_PLUGIN_DIR='"$(PREFIX)/lib/postern/plugins"'
SAN     ?=
ifeq ($(SAN),1)
  CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=address,undefined
  BUILD   := build-san
endif

# libpostern.a: every library folder (pubkey_decode.o is linked on its own, INTERPOSE below)
CORE_SRCS := $(filter-out gateway/util/pubkey_decode.c,$(foreach d,$(LAYERS),$(sort $(wildcard gateway/$(d)/*.c))))
LUA_OBJS  := $(patsubst lua/%.c,$(BUILD)/%.o,$(sort $(wildcard lua/*.c)))
CORE_OBJS := $(patsubst gateway/%.c,$(BUILD)/%.o,$(CORE_SRCS)) $(LUA_OBJS) $(BUILD)/postern_helpers.o
UNIT_TESTS := test_smtp_parse test_data_reader test_spool test_retry test_config test_dsn test_mx test_headers test_proxy_proto test_pubkey_decode test_dane test_chain test_queue_heap test_rcpt_settle test_event_record test_text_decode test_array_grow

# Shipped plugins (plugins/NAME.c -> build/plugins/NAME.so) and plugins the
# tests use (tests/plugins/NAME.c -> build/test-plugins/NAME.so).
PLUGINS      := size_limit header_checks archive route tls_required spf dkim_verify dmarc authres dkim_sign milter \
                rcpt_verify greylist dnsbl clamav rspamd iprev journal
PLUGIN_LIBS_header_checks := -lpcre2-8
PLUGIN_LIBS_archive := -lcrypto -lpthread
PLUGIN_SRCS_archive := plugins/archive_retention.c plugins/archive_journal.c plugins/archive_witness_client.c \
                       plugins/archive_expire.c gateway/util/mime.c gateway/util/base64.c gateway/util/text_decode.c \
                       gateway/util/buf.c
PLUGIN_LIBS_route := -lpcre2-8
PLUGIN_LIBS_spf := -lspf2 -lresolv
PLUGIN_LIBS_dkim_verify := -lopendkim
PLUGIN_LIBS_dkim_sign := -lopendkim -lcrypto
PLUGIN_LIBS_dmarc := -lopendmarc -lresolv -lz -lpthread
PLUGIN_SRCS_dmarc := plugins/dmarc_report.c gateway/mta/report_mail.c
PLUGIN_LIBS_rcpt_verify := -lldap -llber -lpthread
PLUGIN_SRCS_rcpt_verify := gateway/util/ldap_conn.c gateway/util/array_grow.c
PLUGIN_LIBS_greylist := -lsqlite3 -lpthread
PLUGIN_LIBS_dnsbl := -lresolv -lpthread
PLUGIN_LIBS_rspamd := -ljansson
PLUGIN_LIBS_iprev := -lresolv
TEST_PLUGINS := probe probe2 probe_inline probe_first bad_abi no_entry old_layout
PLUGIN_SOS   := $(addprefix $(BUILD)/plugins/,$(addsuffix .so,$(PLUGINS)))
TEST_SOS     := $(addprefix $(BUILD)/test-plugins/,$(addsuffix .so,$(TEST_PLUGINS)))

.PHONY: docs check-layers fuzz all clean test test-fast unit-bins run deps deps-check bench install man deb
all: $(BUILD)/posternd $(BUILD)/postern $(BUILD)/postern-milter $(BUILD)/postern-witness $(PLUGIN_SOS) $(TEST_SOS) $(BUILD)/test-milter

# a libmilter milter the milter plugin's tests talk to
$(BUILD)/test-milter: tests/milter/test_milter.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -lmilter -lpthread

# a plugin is plugins/NAME.c, plus PLUGIN_SRCS_NAME when it has more files
.SECONDEXPANSION:
$(BUILD)/plugins/%.so: plugins/%.c $$(PLUGIN_SRCS_$$*) $(wildcard plugins/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -shared $(LDFLAGS) -o $@ $< $(PLUGIN_SRCS_$*) $(PLUGIN_LIBS_$*)

$(BUILD)/test-plugins/%.so: tests/plugins/%.c plugins/postern_plugin.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -shared $(LDFLAGS) -o $@ $< -lpthread

# the same probe under a second name, to test chain order
$(BUILD)/test-plugins/probe2.so: tests/plugins/probe.c plugins/postern_plugin.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -shared $(LDFLAGS) -o $@ $< -lpthread

# the probe with every stage marked nonblocking: its callbacks run on the loop
$(BUILD)/test-plugins/probe_inline.so: tests/plugins/probe.c plugins/postern_plugin.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DPROBE_NONBLOCKING -fPIC -shared $(LDFLAGS) -o $@ $< -lpthread

# the probe with every stage loop_first (kv_incr defers to a worker under Redis)
$(BUILD)/test-plugins/probe_first.so: tests/plugins/probe.c plugins/postern_plugin.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DPROBE_LOOP_FIRST -fPIC -shared $(LDFLAGS) -o $@ $< -lpthread

# objects by folder (build/util/buf.o), each with the headers it included (-MMD)
$(BUILD)/%.o: gateway/%.c | $(BUILD)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD):
	mkdir -p $(BUILD)

$(LUA_OBJS): $(BUILD)/%.o: lua/%.c | $(BUILD)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

# lua/postern_helpers.lua embedded as a C string
$(BUILD)/postern_helpers.c: lua/postern_helpers.lua | $(BUILD)
	{ echo 'const char postern_helpers_lua[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $<; echo ';'; } > $@

$(BUILD)/postern_helpers.o: $(BUILD)/postern_helpers.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/libpostern.a: $(CORE_OBJS)
	ar rcs $@ $^

# The daemons that run the plugin chain export pubkey_decode.o's
# d2i_PUBKEY_bio, so the libraries they load use it (see that file).
INTERPOSE := $(BUILD)/util/pubkey_decode.o -Wl,--export-dynamic-symbol=d2i_PUBKEY_bio

$(BUILD)/posternd: $(BUILD)/bin/posternd.o $(BUILD)/util/pubkey_decode.o $(BUILD)/libpostern.a
	$(CC) $(LDFLAGS) -o $@ $(BUILD)/bin/posternd.o $(INTERPOSE) $(BUILD)/libpostern.a $(LDLIBS)

$(BUILD)/postern-milter: $(BUILD)/bin/postern_milter.o $(BUILD)/util/pubkey_decode.o $(BUILD)/libpostern.a
	$(CC) $(LDFLAGS) -o $@ $(BUILD)/bin/postern_milter.o $(INTERPOSE) $(BUILD)/libpostern.a $(LDLIBS) -lmilter

# the archive witness: its own small program, no daemon code linked in
$(BUILD)/postern-witness: $(BUILD)/bin/postern_witness.o
	$(CC) $(LDFLAGS) -o $@ $^ -lcrypto

# the CLI runs the chain too (policy test/replay), so it links as posternd does
POSTERN_CLI_OBJS := $(BUILD)/bin/postern.o $(patsubst gateway/%.c,$(BUILD)/%.o,$(sort $(wildcard gateway/cli/*.c)))
$(BUILD)/postern: $(POSTERN_CLI_OBJS) $(BUILD)/util/pubkey_decode.o $(BUILD)/libpostern.a
	$(CC) $(LDFLAGS) -o $@ $(POSTERN_CLI_OBJS) $(INTERPOSE) $(BUILD)/libpostern.a $(LDLIBS) -lcrypto

# linked as posternd is: its d2i_PUBKEY_bio comes before libcrypto's
$(BUILD)/test_pubkey_decode: tests/unit/test_pubkey_decode.c $(BUILD)/util/pubkey_decode.o
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/util/pubkey_decode.o -lcmocka -lcrypto -ldl -lpthread

$(BUILD)/test_%: tests/unit/test_%.c $(BUILD)/libpostern.a
	$(CC) $(CFLAGS) -MMD -MP $(LDFLAGS) -o $@ $< $(BUILD)/libpostern.a -lcmocka $(LDLIBS)

# the chain test loads the test plugins
$(BUILD)/test_chain: $(TEST_SOS)

unit-bins: $(addprefix $(BUILD)/,$(UNIT_TESTS))

# Unit tests, then integration tests against real peers (smtp-sink,
# smtp-source, swaks), all under ASan/UBSan. Ends with "N passed, N failed, N skipped".
# The builds use every core (JOBS) even when make was started without -j.
JOBS ?= $(shell nproc)
test: deps-check check-layers
	$(MAKE) -j$(JOBS) SAN=1 all unit-bins
	$(MAKE) -j$(JOBS) fuzz FUZZ_TIME=$(TEST_FUZZ_TIME)
	tests/run-all.sh build-san

# The same suite against the optimised build.
test-fast: deps-check all unit-bins
	tests/run-all.sh build

# No folder of gateway/ includes a higher one's headers.
check-layers:
	python3 tools/check-layers.py

# Daemon, CLI, shipped plugins, the plugin header, a pkg-config file, the
# man pages, the systemd unit and a logrotate example (PREFIX/share/postern).
MAN_PAGES := man/posternd.8 man/postern.1 man/postern.conf.5 man/postern-plugin.3 man/postern-lua.7 \
             man/postern-milter.8 man/postern-witness.8 man/postern-plugins.5
# (the .deb puts postern.pc in the multiarch directory: debian/rules)
PKGCONFIG_DIR ?= $(PREFIX)/lib/pkgconfig
install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include/postern \
	  $(DESTDIR)$(PREFIX)/lib/postern/plugins $(DESTDIR)$(PKGCONFIG_DIR)
	install -m 755 $(BUILD)/posternd $(BUILD)/postern-milter $(BUILD)/postern-witness $(DESTDIR)$(PREFIX)/sbin/
	install -m 755 $(BUILD)/postern $(DESTDIR)$(PREFIX)/bin/
	install -m 644 plugins/postern_plugin.h $(DESTDIR)$(PREFIX)/include/postern/
	install -m 755 $(PLUGIN_SOS) $(DESTDIR)$(PREFIX)/lib/postern/plugins/
	sed 's|@PREFIX@|$(PREFIX)|' postern.pc.in > $(DESTDIR)$(PKGCONFIG_DIR)/postern.pc
	for m in $(MAN_PAGES); do s=$${m##*.}; install -d $(DESTDIR)$(PREFIX)/share/man/man$$s; \
	  install -m 644 $$m $(DESTDIR)$(PREFIX)/share/man/man$$s/; done
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system $(DESTDIR)$(PREFIX)/share/postern
	sed -e 's|@SBINDIR@|$(PREFIX)/sbin|g' -e 's|@BINDIR@|$(PREFIX)/bin|g' dist/postern.service \
	  > $(DESTDIR)$(PREFIX)/lib/systemd/system/postern.service
	install -m 644 dist/postern.logrotate dist/postern.conf $(DESTDIR)$(PREFIX)/share/postern/

# man/postern.conf.5 from README.md's configuration table
man:
	python3 tools/gen-conf-man.py

# README's key table from gateway/core/config_keys.c and its man page; the
# plugins' option tables as postern-plugins(5)
docs: $(BUILD)/postern $(PLUGIN_SOS)
	python3 tools/gen-conf-doc.py $(BUILD)
	python3 tools/gen-plugin-man.py $(BUILD)

# A Debian package (debian/), built from a copy of the tree in build-deb/
# and checked by lintian: build-deb/postern_VERSION_ARCH.deb
deb:
	rm -rf build-deb && mkdir -p build-deb/src
	tar --exclude=./build --exclude=./build-san --exclude=./build-fuzz --exclude=./build-tsan \
	  --exclude=./build-deb --exclude=./.git --exclude=./run -cf - . | tar -xf - -C build-deb/src
	cd build-deb/src && dpkg-buildpackage -us -uc -b
	lintian --fail-on error build-deb/postern_*.deb

deps-check:
	@tests/check-deps.sh

deps:
	./tools/install-deps.sh

run: deps all
	./tools/run-local.sh $(BUILD)

bench: all
	bench/relay-vs-postfix.sh $(BUILD)

clean:
	rm -rf build build-san build-fuzz build-deb

# libFuzzer harnesses (tests/fuzz/fuzz_NAME.c, seeds in tests/fuzz/corpus/NAME/),
# each run for FUZZ_TIME seconds; new inputs collect in build-fuzz/corpus-NAME,
# crashes in build-fuzz/fuzz_NAME-crash-*. The gateway sources are compiled
# once more with clang's fuzzer instrumentation into build-fuzz/libfuzzcore.a.
FUZZERS ?= fuzz_smtp_command fuzz_data_reader fuzz_headers fuzz_spool_record fuzz_config fuzz_mta_sts \
           fuzz_milter_codec fuzz_proxy_proto fuzz_dsn fuzz_nexthop fuzz_auth fuzz_dnsbl fuzz_tlsa fuzz_mime
FUZZ_TIME ?= 60
TEST_FUZZ_TIME ?= 10
FUZZ_CFLAGS := -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -std=c11 -D_GNU_SOURCE \
               $(INCLUDES) -DPOSTERN_PLUGIN_DIR='"/nonexistent"'
FUZZ_OBJS := $(patsubst gateway/%.c,build-fuzz/obj/%.o,$(CORE_SRCS))

build-fuzz/obj/%.o: gateway/%.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c -o $@ $<

build-fuzz/libfuzzcore.a: $(FUZZ_OBJS)
	ar rcs $@ $^

build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c build-fuzz/libfuzzcore.a $(wildcard plugins/*.h) $(wildcard gateway/*/*.h)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< build-fuzz/libfuzzcore.a $(LDLIBS) $(FUZZ_LIBS_$*)

# harnesses that compile a plugin in
build-fuzz/fuzz_dnsbl: plugins/dnsbl.c
FUZZ_LIBS_dnsbl := -lresolv

# Each harness is a target of its own (fuzz-run-NAME), so `make -j2 fuzz`
# runs two at a time; a crash prints the end of its log and fails the run.
fuzz: $(addprefix fuzz-run-,$(FUZZERS))

fuzz-run-%: build-fuzz/%
	@mkdir -p build-fuzz/corpus-$*
	@build-fuzz/$* -max_total_time=$(FUZZ_TIME) -max_len=8192 -artifact_prefix=build-fuzz/$*- \
	    build-fuzz/corpus-$* tests/fuzz/corpus/$(patsubst fuzz_%,%,$*) >build-fuzz/$*.log 2>&1 \
	    || { echo "== fuzz: $* FAILED"; tail -40 build-fuzz/$*.log; exit 1; }
	@echo "== fuzz: $* for $(FUZZ_TIME)s: $$(tail -1 build-fuzz/$*.log)"

# the headers each object included, as -MMD wrote them
-include $(wildcard $(BUILD)/*.d $(BUILD)/*/*.d build-fuzz/obj/*/*.d)

# inplace — top-level build.  Each module is a static library; cli/ links
# them into the single `inplace` executable.  `make check` is what CI runs.

CC      ?= gcc
BUILD   ?= build
PKGS    := fdisk blkid smartcols ext2fs libntfs-3g libarchive libzstd libcurl \
           inih json-c libsodium libacl libxxhash \
           libelf libkmod
OPT     ?= -O2
V       ?= 0
Q       := $(if $(filter 1,$(V)),,@)
SAN     ?=
CFLAGS  := -std=c17 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 $(OPT) -g \
           -Wall -Wextra -Werror -Wno-missing-field-initializers -Wno-format-truncation \
           -fno-strict-aliasing -pthread -I. $(SAN) \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(EXTRA_CFLAGS)
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lcom_err -pthread
LDFLAGS := $(SAN)

# Link order: dependants before their dependencies (bootstage → imager,
# migrate, partctl → common).
.DEFAULT_GOAL := all
MODULES := bootstage imager migrate partctl common
LIBS    := $(foreach m,$(MODULES),$(BUILD)/lib$(m).a)

define module_rules
$(1)_SRC := $$(wildcard $(1)/*.c)
$(1)_OBJ := $$(patsubst %.c,$(BUILD)/%.o,$$($(1)_SRC))
$(BUILD)/lib$(1).a: $$($(1)_OBJ)
	@mkdir -p $$(@D)
	@rm -f $$@
	$(Q)ar rcs $$@ $$^
endef
$(foreach m,$(MODULES),$(eval $(call module_rules,$(m))))

# The bundle's launcher (bootstage/launcher/, see bootstage/bundle.h):
# linked statically so it runs where no library is, and embedded in
# libbootstage.a (bs_launcher_start..end) so any inplace can write a bundle.
$(BUILD)/launcher: bootstage/launcher/launcher.c
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) -std=c17 -D_GNU_SOURCE -Os -s -static -Wall -Wextra -Werror -o $@ $<
$(BUILD)/launcher_blob.o: $(BUILD)/launcher
	$(Q)printf '.section .rodata\n.balign 16\n.globl bs_launcher_start\n.globl bs_launcher_end\nbs_launcher_start:\n.incbin "%s"\nbs_launcher_end:\n.section .note.GNU-stack,"",@progbits\n' '$<' | \
	  $(CC) -c -x assembler -o $@ -
$(BUILD)/libbootstage.a: $(BUILD)/launcher_blob.o

# The systemd units inplace writes at run time are the files of
# contrib/systemd/ that make install ships, embedded here byte for byte
# (bs_unit_<name>_start..end, the name's - and . as _), so the two cannot
# drift; the writers add only the lines that carry run-time values.
SYSTEMD_UNITS := contrib/systemd/inplace-firstboot.service contrib/systemd/inplace-postpone.service \
            contrib/systemd/inplace-postpone.timer
$(BUILD)/units_blob.o: $(SYSTEMD_UNITS)
	@mkdir -p $(@D)
	$(Q){ printf '.section .rodata\n'; for f in $^; do s=$$(basename $$f | tr .- __); \
	  printf '.globl bs_unit_%s_start\n.globl bs_unit_%s_end\nbs_unit_%s_start:\n.incbin "%s"\nbs_unit_%s_end:\n' \
	    $$s $$s $$s $(CURDIR)/$$f $$s; done; \
	  printf '.section .note.GNU-stack,"",@progbits\n'; } | $(CC) -c -x assembler -o $@ -
$(BUILD)/libbootstage.a: $(BUILD)/units_blob.o

CLI_SRC  := $(wildcard cli/*.c)
CLI_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(CLI_SRC))
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
TOOL_SRC := $(wildcard tests/tools/*.c)
TOOL_BIN := $(patsubst tests/tools/%.c,$(BUILD)/tests/tools/%,$(TOOL_SRC))
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)

# Manual pages: man/*.in hold the prose, the binary adds every synopsis and
# option from the same tables as --help (cli/help.c, `inplace --help-man`).
MAN_SRC  := $(wildcard man/*.in)
MAN      := $(patsubst man/%.in,$(BUILD)/man/%,$(MAN_SRC))

.PHONY: all deps check check-vm-long unit integration vm asan demo bench fuzz clean man
all: $(BUILD)/inplace $(UNIT_BIN) $(TOOL_BIN) $(MAN)

man: $(MAN)

$(BUILD)/man/%: man/%.in $(BUILD)/inplace
	@mkdir -p $(@D)
	@echo "  MAN     $@"
	$(Q)$(BUILD)/inplace --help-man $< > $@.tmp && mv $@.tmp $@

deps:
	@sh mk/deps.sh

$(BUILD)/empty.o:
	@mkdir -p $(@D)
	$(Q)echo 'typedef int inplace_empty_unit;' | $(CC) $(CFLAGS) -x c -c -o $@ -

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(LIBS): $(BUILD)/empty.o

$(BUILD)/inplace: $(CLI_OBJ) $(LIBS)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIBS) $(LDLIBS)

$(BUILD)/tests/test_%: $(BUILD)/tests/unit/test_%.o $(LIBS)
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(LIBS) $(LDLIBS) -lcmocka

$(BUILD)/tests/tools/%: $(BUILD)/tests/tools/%.o $(LIBS)
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $< $(LIBS) $(LDLIBS)

# Unit tests: every tests/unit/test_*.c is one cmocka binary.
unit: $(UNIT_BIN)
	@sh tests/run-unit.sh $(UNIT_BIN)

# Integration tests drive the real binary on generated disk images.
integration: $(BUILD)/inplace $(TOOL_BIN)
	@INPLACE=$(abspath $(BUILD)/inplace) TOOLS=$(abspath $(BUILD)/tests/tools) \
	  bash tests/integration/run.sh $(T)

# The whole pipeline across real reboots under QEMU (tests/vm/t-*.sh, same
# runner and result format); the Debian disks are cached outside the
# checkout.  VM_LONG=1 (check-vm-long) adds the longer variants.
vm: $(BUILD)/inplace $(TOOL_BIN)
	@INPLACE=$(abspath $(BUILD)/inplace) TOOLS=$(abspath $(BUILD)/tests/tools) \
	  TEST_SCRIPTS=$(abspath tests/vm) TEST_TIMEOUT=3600 bash tests/integration/run.sh $(T)

# The same unit tests under AddressSanitizer + UndefinedBehaviorSanitizer.
asan:
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" unit

check: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory integration
	@$(MAKE) --no-print-directory asan
	@$(MAKE) --no-print-directory vm

# tests/vm/long: the chain inside the VM across its own reboots, not yet
# passing (see README, "End to end in a VM"), and the longer variants.
check-vm-long: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory VM_LONG=1 vm
	@INPLACE=$(abspath $(BUILD)/inplace) TOOLS=$(abspath $(BUILD)/tests/tools) VM_LONG=1 \
	  TEST_SCRIPTS=$(abspath tests/vm/long) TEST_TIMEOUT=3600 bash tests/integration/run.sh $(T)

demo: deps
	@$(MAKE) --no-print-directory all
	@INPLACE=$(abspath $(BUILD)/inplace) bash tests/demo.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@for b in bench/*; do [ -x "$$b" ] && INPLACE=$(abspath $(BUILD)/inplace) "$$b"; done

# libFuzzer targets for the on-disk parsers: each to 10^6 runs, FUZZ_TIME
# seconds at most (tests/fuzz/run.sh; not part of `check`).
fuzz:
	@sh tests/fuzz/run.sh $(FUZZ_SRC)

# ---- install, pkg-config, Debian package (README "Install") ---------------
# GNU directory variables; DESTDIR stages the tree (debian/rules, tests).
# The module archives are installed as libinplace-MODULE.a (a bare
# libcommon.a would collide) with their public headers under
# include/inplace/MODULE/ (they include each other as "common/common.h")
# and one pkg-config file each.
VERSION        := $(shell sed -n 's/^\#define IP_TOOL_VERSION "\(.*\)"/\1/p' common/common.h)
PREFIX         ?= /usr/local
SBINDIR        ?= $(PREFIX)/sbin
LIBDIR         ?= $(PREFIX)/lib
INCLUDEDIR     ?= $(PREFIX)/include
DATADIR        ?= $(PREFIX)/share
MANDIR         ?= $(DATADIR)/man
PKGCONFIGDIR   ?= $(LIBDIR)/pkgconfig
BASHCOMPDIR    ?= $(DATADIR)/bash-completion/completions
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
DESTDIR        ?=
INSTALL        ?= install
UNITS          := $(SYSTEMD_UNITS)
PCS            := $(foreach m,$(MODULES),$(BUILD)/pkgconfig/inplace-$(m).pc)

# Directories under PREFIX are written as ${prefix}/…, so that the files
# relocate (pkg-config --define-prefix) when the tree is staged elsewhere.
pc_rel = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))
$(BUILD)/pkgconfig/%.pc: mk/%.pc.in common/common.h Makefile
	@mkdir -p $(@D)
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(call pc_rel,$(LIBDIR))|g' \
	  -e 's|@INCLUDEDIR@|$(call pc_rel,$(INCLUDEDIR))|g' -e 's|@VERSION@|$(VERSION)|g' $< > $@.tmp && mv $@.tmp $@

# The .pc files carry PREFIX, so they are made again on every install.
.PHONY: install uninstall deb FORCE
FORCE:
$(PCS): FORCE
install: $(BUILD)/inplace $(LIBS) $(PCS) $(MAN)
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) \
	  $(DESTDIR)$(SYSTEMDUNITDIR)
	$(INSTALL) -m 0755 $(BUILD)/inplace $(DESTDIR)$(SBINDIR)/inplace
	$(foreach m,$(MODULES),$(INSTALL) -d $(DESTDIR)$(INCLUDEDIR)/inplace/$(m) && \
	  $(INSTALL) -m 0644 $(m)/$(m).h $(DESTDIR)$(INCLUDEDIR)/inplace/$(m)/ && \
	  $(INSTALL) -m 0644 $(BUILD)/lib$(m).a $(DESTDIR)$(LIBDIR)/libinplace-$(m).a && \
	  $(INSTALL) -m 0644 $(BUILD)/pkgconfig/inplace-$(m).pc $(DESTDIR)$(PKGCONFIGDIR)/ &&) true
	$(if $(UNITS),$(INSTALL) -m 0644 $(UNITS) $(DESTDIR)$(SYSTEMDUNITDIR)/)
	$(Q)for f in $(MAN); do s=$${f##*.}; $(INSTALL) -d $(DESTDIR)$(MANDIR)/man$$s && \
	  $(INSTALL) -m 0644 "$$f" $(DESTDIR)$(MANDIR)/man$$s/ || exit 1; done
	$(INSTALL) -d $(DESTDIR)$(BASHCOMPDIR)
	$(INSTALL) -m 0644 contrib/bash-completion/inplace $(DESTDIR)$(BASHCOMPDIR)/inplace

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/inplace $(DESTDIR)$(BASHCOMPDIR)/inplace \
	  $(foreach u,$(UNITS),$(DESTDIR)$(SYSTEMDUNITDIR)/$(notdir $(u))) \
	  $(foreach m,$(MODULES),$(DESTDIR)$(LIBDIR)/libinplace-$(m).a $(DESTDIR)$(PKGCONFIGDIR)/inplace-$(m).pc \
	    $(DESTDIR)$(INCLUDEDIR)/inplace/$(m)/$(m).h)
	rm -f $(DESTDIR)$(MANDIR)/man8/inplace.8 $(DESTDIR)$(MANDIR)/man8/inplace-*.8 $(DESTDIR)$(MANDIR)/man5/inplace-*.5
	-rmdir $(foreach m,$(MODULES),$(DESTDIR)$(INCLUDEDIR)/inplace/$(m)) $(DESTDIR)$(INCLUDEDIR)/inplace 2>/dev/null

# The Debian package (debian/, debhelper): built out of a copy of the
# tree, so the build tree and the checkout stay as they are; the .debs
# and lintian's report land in $(BUILD)/deb/.
deb:
	$(Q)rm -rf $(BUILD)/deb && mkdir -p $(BUILD)/deb/src
	$(Q)tar -c --exclude='./build*' --exclude=./.git . | tar -x -C $(BUILD)/deb/src
	$(Q)cd $(BUILD)/deb/src && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL dpkg-buildpackage -us -uc -b -j2 > ../build.log 2>&1 || \
	  { tail -30 ../build.log; exit 1; }
	$(Q)rm -rf $(BUILD)/deb/src
	@# an error from lintian fails the target; warnings are listed
	$(Q)lintian --fail-on error --tag-display-limit 0 $(BUILD)/deb/*.changes > $(BUILD)/deb/lintian.log 2>&1 || \
	  { cat $(BUILD)/deb/lintian.log; exit 1; }
	@cat $(BUILD)/deb/lintian.log; ls $(BUILD)/deb/*.deb

clean:
	rm -rf build build-asan build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
.SECONDARY:

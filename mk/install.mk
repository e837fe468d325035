# `make install`: the package in a venv under $(PREFIX), the systemd unit, and the example config.
# Upgrade = `git pull && make install && systemctl restart telemetryd` (config and state are kept).
# DESTDIR stages the unit/config/docs for packaging; the venv itself cannot be relocated, so
# install-venv ignores DESTDIR.
PREFIX ?= /opt/telemetryd
DESTDIR ?=
UNIT_DIR ?= /etc/systemd/system
CONFIG_DIR ?= /etc/telemetryd
DOC_DIR = $(PREFIX)/share/doc/telemetryd
INSTALL_PY ?= python3

.PHONY: install install-venv install-unit install-config install-docs uninstall

install: install-venv install-unit install-config install-docs
	@$(PREFIX)/bin/telemetryd check-config --config $(CONFIG_DIR)/telemetryd.toml >/dev/null || \
		echo "WARNING: $(CONFIG_DIR)/telemetryd.toml is not valid (see above); fix it before (re)starting" >&2
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "installed. Next: edit $(CONFIG_DIR)/telemetryd.toml, then"
	@echo "  systemctl enable --now telemetryd     (first install)"
	@echo "  systemctl restart telemetryd          (upgrade)"

install-venv:
	test -x $(PREFIX)/bin/python || $(INSTALL_PY) -m venv $(PREFIX)
	$(PREFIX)/bin/pip install -q --disable-pip-version-check --upgrade '.[systemd]'
	$(PREFIX)/bin/telemetryd --help >/dev/null

# Always replaced: local changes belong in drop-ins (systemctl edit telemetryd).
install-unit:
	install -d $(DESTDIR)$(UNIT_DIR)
	sed -e 's#/opt/telemetryd#$(PREFIX)#g' -e 's#/etc/telemetryd/telemetryd.toml#$(CONFIG_DIR)/telemetryd.toml#g' \
		systemd/telemetryd.service > $(DESTDIR)$(UNIT_DIR)/telemetryd.service.tmp
	chmod 0644 $(DESTDIR)$(UNIT_DIR)/telemetryd.service.tmp
	mv -f $(DESTDIR)$(UNIT_DIR)/telemetryd.service.tmp $(DESTDIR)$(UNIT_DIR)/telemetryd.service

# Never overwrites an existing config; the current example is always at $(DOC_DIR).
install-config:
	install -d $(DESTDIR)$(CONFIG_DIR) $(DESTDIR)$(DOC_DIR)
	install -m 0644 systemd/telemetryd.toml $(DESTDIR)$(DOC_DIR)/telemetryd.toml.example
	@if [ -e $(DESTDIR)$(CONFIG_DIR)/telemetryd.toml ]; then \
		echo "kept existing $(DESTDIR)$(CONFIG_DIR)/telemetryd.toml (example: $(DOC_DIR)/telemetryd.toml.example)"; \
	else \
		install -m 0644 systemd/telemetryd.toml $(DESTDIR)$(CONFIG_DIR)/telemetryd.toml; \
	fi

install-docs:
	install -d $(DESTDIR)$(DOC_DIR)
	for f in docs/*.md README.md; do [ -e "$$f" ] && install -m 0644 "$$f" $(DESTDIR)$(DOC_DIR)/; done; true

# Keeps /etc/telemetryd and the state in /var/lib/private/telemetryd.
uninstall:
	-@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl disable --now telemetryd; fi
	rm -f $(DESTDIR)$(UNIT_DIR)/telemetryd.service
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	rm -rf $(PREFIX)

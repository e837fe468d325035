# Prometheus and promtool for the alert-rule and end-to-end tests. The Debian package is fetched and
# unpacked, never installed: installing it would run its postinst, which starts a Prometheus server.
PROM_DIR := .build/prometheus
PROMETHEUS_BIN := $(PROM_DIR)/usr/bin/prometheus
PROMTOOL_BIN := $(PROM_DIR)/usr/bin/promtool

TEST_DEPS += $(PROM_DIR)/.stamp

.PHONY: prometheus
prometheus: $(PROM_DIR)/.stamp

# Unpacks into a sibling directory and renames it into place, so an interrupted run never leaves a
# half-extracted tree that the stamp would vouch for.
$(PROM_DIR)/.stamp:
	@set -eu; \
	command -v apt-get >/dev/null 2>&1 || { echo "prometheus.mk: needs apt-get (Debian)" >&2; exit 1; }; \
	dl=$$(mktemp -d); trap 'rm -rf "$$dl"' EXIT; \
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq; \
		if id _apt >/dev/null 2>&1; then chown _apt "$$dl"; fi; \
	elif ! apt-cache show prometheus >/dev/null 2>&1; then \
		echo "prometheus.mk: no 'prometheus' in the apt lists; run 'apt-get update' as root" >&2; exit 1; \
	fi; \
	( cd "$$dl" && apt-get download -qq prometheus ); \
	deb=$$(ls "$$dl"/prometheus_*.deb); \
	rm -rf $(PROM_DIR) $(PROM_DIR).tmp; mkdir -p $(PROM_DIR).tmp; \
	dpkg-deb -x "$$deb" $(PROM_DIR).tmp; \
	$(PROM_DIR).tmp/usr/bin/prometheus --version >/dev/null; \
	$(PROM_DIR).tmp/usr/bin/promtool --version >/dev/null; \
	mv $(PROM_DIR).tmp $(PROM_DIR); \
	echo "prometheus.mk: unpacked $$(basename "$$deb") into $(PROM_DIR)"; \
	touch $@

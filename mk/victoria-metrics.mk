# VictoriaMetrics (single-node) for the fleet test: one Prometheus remote-writes into it. Like
# prometheus.mk, the Debian package is fetched and unpacked, never installed: its postinst would create a
# user and start a service.
VM_DIR := .build/victoria-metrics
VM_BIN := $(VM_DIR)/usr/bin/victoria-metrics

TEST_DEPS += $(VM_DIR)/.stamp

.PHONY: victoria-metrics
victoria-metrics: $(VM_DIR)/.stamp

$(VM_DIR)/.stamp:
	@set -eu; \
	command -v apt-get >/dev/null 2>&1 || { echo "victoria-metrics.mk: needs apt-get (Debian)" >&2; exit 1; }; \
	dl=$$(mktemp -d); trap 'rm -rf "$$dl"' EXIT; \
	if [ "$$(id -u)" = 0 ]; then \
		apt-cache show victoria-metrics >/dev/null 2>&1 || apt-get update -qq; \
		if id _apt >/dev/null 2>&1; then chown _apt "$$dl"; fi; \
	elif ! apt-cache show victoria-metrics >/dev/null 2>&1; then \
		echo "victoria-metrics.mk: no 'victoria-metrics' in the apt lists; run 'apt-get update' as root" >&2; \
		exit 1; \
	fi; \
	( cd "$$dl" && apt-get download -qq victoria-metrics ); \
	deb=$$(ls "$$dl"/victoria-metrics_*.deb); \
	rm -rf $(VM_DIR) $(VM_DIR).tmp; mkdir -p $(VM_DIR).tmp; \
	dpkg-deb -x "$$deb" $(VM_DIR).tmp; \
	$(VM_DIR).tmp/usr/bin/victoria-metrics --version >/dev/null; \
	mv $(VM_DIR).tmp $(VM_DIR); \
	echo "victoria-metrics.mk: unpacked $$(basename "$$deb") into $(VM_DIR)"; \
	touch $@

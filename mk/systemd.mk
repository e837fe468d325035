# tests/test_systemd_unit.py runs `systemd-analyze verify` and `systemd-analyze security --offline`.
# Debian ships systemd-analyze in the `systemd` package; installing it does not start systemd
# (nothing here boots it, and the tests only analyze unit files).
TEST_DEPS += systemd-analyze-tool

.PHONY: systemd-analyze-tool
systemd-analyze-tool:
	@command -v systemd-analyze >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing systemd (for systemd-analyze)" >&2; \
			apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null; \
		else \
			echo "systemd-analyze missing: sudo apt-get install systemd" >&2; exit 1; \
		fi; }
	@systemd-analyze --version | head -n 1

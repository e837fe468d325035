"""The optional C accelerator of the hot path's cache key (daemon/telemetryd/_stage0.c).

Everything else is in pyproject.toml. `optional=True`: where no compiler is found, the install goes on
and telemetryd uses the pure-Python definition (typed_values.key_py), which gives the same keys.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "telemetryd._stage0",
            ["daemon/telemetryd/_stage0.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)

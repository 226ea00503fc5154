"""The compiled read path, ``field_encrypt._gcm`` (C on OpenSSL's libcrypto); everything
else about the package is in pyproject.toml. Declared here, not in pyproject.toml's
``[tool.setuptools.ext-modules]``, which setuptools still calls experimental. Optional: a
machine without gcc or the headers installs the package with the pure-Python read path
(scripts/setup says so; CI's test_ci_builds_the_compiled_path fails instead)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "field_encrypt._gcm",
            sources=["src/field_encrypt/_gcm.c"],
            libraries=["crypto"],
            optional=True,
        )
    ]
)

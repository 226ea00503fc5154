"""The settings' own environment reader gives what pydantic-settings gave, on the same input.

``Settings`` and ``NoteLettSettings`` read the environment through
:mod:`field_encrypt.environment` instead of pydantic-settings (start-up time). Each case
here builds the model both ways, with pydantic-settings' ``BaseSettings`` over the very
same fields, validators and options, and compares the values, which fields count as set,
and the validation errors (type, location, message).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError, create_model, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from field_encrypt.config import Settings
from field_encrypt.environment import PLUGINS_SWITCH, EnvironmentModel, pydantic_plugins_off
from notelett.settings import NoteLettSettings

OPTIONS = ("extra", "frozen", "populate_by_name")


def _reference(model: type[EnvironmentModel]) -> type[BaseSettings]:
    """``model`` as a pydantic-settings ``BaseSettings``: same fields, validators, options."""
    config = SettingsConfigDict(
        env_prefix=model.env_prefix,
        **{k: v for k, v in model.model_config.items() if k in OPTIONS},  # type: ignore[typeddict-item]
    )
    base = type(f"{model.__name__}Base", (BaseSettings,), {"model_config": config})
    validators = {
        f"_check_{i}": field_validator(*d.info.fields, mode=d.info.mode)(_unbound(d.func))  # type: ignore[call-overload]
        for i, d in enumerate(model.__pydantic_decorators__.field_validators.values())
    }
    fields: dict[str, Any] = {n: (f.annotation, f) for n, f in model.model_fields.items()}
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{model.__name__}Reference", __base__=base, __validators__=validators, **fields
    )


def _unbound(check: Any) -> Any:
    """A class-method validator (bound to its model) as a plain one-argument function."""

    def validate(value: Any) -> Any:
        return check(value)

    return validate


def _outcome(model: type[BaseModel], overrides: dict[str, object]) -> object:
    """What building ``model`` from the process environment plus ``overrides`` gives."""
    try:
        built = model(**overrides)
    except ValidationError as exc:
        return ("error", [(e["type"], e["loc"], e["msg"]) for e in exc.errors()])
    return ("ok", built.model_dump(), built.model_fields_set)


CASES: list[tuple[str, dict[str, str], dict[str, object]]] = [
    ("nothing set", {}, {}),
    (
        "every kind of field",
        {
            "FIELD_ENCRYPT_ENABLED": "false",
            "FIELD_ENCRYPT_ALLOW_PLAINTEXT": "true",
            "FIELD_ENCRYPT_KEY_PROVIDER": "env",
            "FIELD_ENCRYPT_KEY": "c2VjcmV0",
            "FIELD_ENCRYPT_PREVIOUS_KEYS": "",
            "FIELD_ENCRYPT_KEYRING": "/tmp/k.json",
            "FIELD_ENCRYPT_CACHE_TTL_SECONDS": "2.5",
            "FIELD_ENCRYPT_CACHE_MAX_ENTRIES": "7",
            "FIELD_ENCRYPT_PKCS11_PIN": "1234",
            "FIELD_ENCRYPT_KEY_LAYOUT": "kek",
            "FIELD_ENCRYPT_UNKNOWN_THING": "ignored",
            "NOTELETT_PORT": "8080",
            "NOTELETT_DATABASE": "postgresql://db/notes",
            "NOTELETT_JWT_ALGORITHM": "RS256",
            "NOTELETT_JWT_SECRET": "s" * 40,
            "NOTELETT_DEV_MODE": "1",
            "NOTELETT_JWT_SECRET_FILE": "/tmp/secret",
        },
        {},
    ),
    (
        "names in another case",
        {"field_encrypt_mek_name": "lower", "Notelett_Host": "0.0.0.0", "azure_keyvault_url": "a"},
        {},
    ),
    (
        "both Key Vault names",
        {"AZURE_KEYVAULT_URL": "https://a", "FIELD_ENCRYPT_AZURE_KEYVAULT_URL": "https://b"},
        {},
    ),
    ("the prefixed Key Vault name", {"FIELD_ENCRYPT_AZURE_KEYVAULT_URL": "https://b"}, {}),
    (
        "keywords over the environment",
        {"FIELD_ENCRYPT_DATABASE": "from-env.db", "FIELD_ENCRYPT_CREATE_MISSING": "true"},
        {"database": "from-kwargs.db", "create_missing": False},
    ),
    (
        "invalid values",
        {
            "FIELD_ENCRYPT_ENABLED": "maybe",
            "FIELD_ENCRYPT_ALLOW_PLAINTEXT": "",
            "FIELD_ENCRYPT_KEY_PROVIDER": "vault",
            "FIELD_ENCRYPT_CACHE_TTL_SECONDS": "-1",
            "FIELD_ENCRYPT_AKV_KEY_SIZE": "1000",
            "FIELD_ENCRYPT_MEK_NAME": "  ",
            "NOTELETT_PORT": "0",
            "NOTELETT_MAX_BODY_BYTES": "many",
            "NOTELETT_JWT_ALGORITHM": "none",
        },
        {},
    ),
    ("an invalid keyword", {}, {"provider_max_attempts": 0, "port": 70000}),
]


@pytest.mark.parametrize("model", [Settings, NoteLettSettings], ids=lambda m: m.__name__)
@pytest.mark.parametrize(
    ("environ", "overrides"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_the_environment_is_read_as_pydantic_settings_reads_it(
    model: type[EnvironmentModel],
    environ: dict[str, str],
    overrides: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same values, same set fields, same errors as ``BaseSettings`` with the same fields."""
    for name in list(os.environ):
        if name.upper().startswith(("FIELD_ENCRYPT_", "NOTELETT_", "AZURE_KEYVAULT_URL")):
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    kwargs = {k: v for k, v in overrides.items() if k in model.model_fields}
    assert _outcome(model, kwargs) == _outcome(_reference(model), kwargs)


@pytest.mark.parametrize("previous", [None, "logfire"])
def test_plugins_are_off_only_while_a_settings_model_is_made(
    previous: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A settings model is made with pydantic's plugin switch set, and the switch is left
    as it was (unset, or the user's own list of plugins to skip), also after an error."""
    if previous is None:
        monkeypatch.delenv(PLUGINS_SWITCH, raising=False)
    else:
        monkeypatch.setenv(PLUGINS_SWITCH, previous)
    seen: list[str | None] = []

    class Seen(int):
        """An int whose schema notes the switch when the model's validator is built."""

        @classmethod
        def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
            seen.append(os.environ.get(PLUGINS_SWITCH))
            return handler(int)

    class Probe(EnvironmentModel):
        value: Seen = Seen(0)

    assert seen == ["__all__"]
    assert os.environ.get(PLUGINS_SWITCH) == previous
    with pytest.raises(RuntimeError), pydantic_plugins_off():
        raise RuntimeError
    assert os.environ.get(PLUGINS_SWITCH) == previous
    assert Probe(value=3).value == 3

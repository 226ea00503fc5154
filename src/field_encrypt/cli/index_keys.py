"""``field-encrypt index-keys``: blind-index root key versions: list, create, retire.

The newest version is the current one (new index values are computed under it); ``migrate
--mode reindex`` moves the stored values to it, and ``retire`` deletes an older version
through the gate (refused while any stored index value is on it). See docs/queryable.md.
"""

from __future__ import annotations

from typing import Annotated

import typer

from field_encrypt.cli import output
from field_encrypt.cli.common import JsonOpt, ProductOpt, guarded, opened

index_keys_app = typer.Typer(
    help="Blind-index root key versions: list, create, retire (the newest is current).",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: rich's formatter costs ~0.15 s of start-up
)


@index_keys_app.command("list")
@guarded
def index_keys_list(product: ProductOpt, json_: JsonOpt = False) -> None:
    """List index-key versions and the stored index values on each, per indexed field."""
    from field_encrypt.rotation.reindex import index_value_counts, keyring_of

    with opened(product) as rt:
        versions = keyring_of(rt).versions()
        counts = index_value_counts(rt)
    current = versions[-1] if versions else None
    if json_:
        output.emit_json(
            {"product": product, "versions": versions, "current": current, "index_values": counts}
        )
        return
    console = output.stdout()
    console.print(
        f"index-key versions of {product}: "
        + (", ".join(f"{v}{' (current)' if v == current else ''}" for v in versions) or "none")
    )
    console.print(
        output.table(
            "Stored index values",
            ["field", "per version"],
            [
                (name, ", ".join(f"{v}={n}" for v, n in sorted(per.items())) or "none")
                for name, per in counts.items()
            ],
        )
    )


@index_keys_app.command("create")
@guarded
def index_keys_create(product: ProductOpt, json_: JsonOpt = False) -> None:
    """Create the next index-key version (1 for the first); it becomes the current one."""
    from field_encrypt.rotation.reindex import keyring_of

    with opened(product) as rt:
        version = keyring_of(rt).create_next()
    if json_:
        output.emit_json({"product": product, "version": version, "current": True})
    else:
        output.stdout().print(
            f"created index-key version {version} of {product} (now current): re-open the "
            "index in every process, then run field-encrypt migrate --mode reindex"
        )


@index_keys_app.command("retire")
@guarded
def index_keys_retire(
    version: Annotated[int, typer.Argument(min=1, help="The index-key version to retire.")],
    product: ProductOpt,
    json_: JsonOpt = False,
) -> None:
    """Delete an old index-key version; refused (exit 6) while any index value is on it."""
    from field_encrypt.rotation.reindex import retire_index_version

    with opened(product) as rt:
        report = retire_index_version(rt, version)
    if json_:
        output.emit_json(report.as_dict())
    else:
        output.stdout().print(
            f"retired index-key version {version} of {product} (its root key is deleted); "
            f"current: {report.current}"
        )

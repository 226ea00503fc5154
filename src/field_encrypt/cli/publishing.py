"""``--metrics-pushgateway`` and ``--metrics-textfile``: a long run publishes its metrics.

While a run goes on its progress is published every 15 s (after a batch); when the
command ends, however it ends, the final values are published once more, with the key
state (current MEK version, DEKs per version) read once. See docs/operations.md.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from field_encrypt import metrics

if TYPE_CHECKING:
    from field_encrypt.products import ProductRuntime

PushgatewayOpt = Annotated[
    str | None,
    typer.Option(
        "--metrics-pushgateway",
        help="Push metrics to this Prometheus Pushgateway (host:port or URL) during and "
        "after the run.",
        envvar="FIELD_ENCRYPT_METRICS_PUSHGATEWAY",
    ),
]
TextfileOpt = Annotated[
    Path | None,
    typer.Option(
        "--metrics-textfile",
        help="Write metrics to this file (node-exporter textfile collector; written "
        "atomically) during and after the run.",
        envvar="FIELD_ENCRYPT_METRICS_TEXTFILE",
    ),
]
JOB = "field-encrypt"


def publisher(
    runtime: ProductRuntime,
    *,
    command: str,
    worker: str = "1/1",
    pushgateway: str | None,
    textfile: Path | None,
) -> metrics.Publisher:
    """The publisher for one command; inactive when neither flag was given."""
    from field_encrypt.usage import dek_counts

    product = runtime.encryptor.product
    key_state = metrics.KeyStateCollector(
        product=product,
        provider=runtime.provider,
        counts=functools.partial(dek_counts, runtime),
    )
    return metrics.Publisher(
        textfile=str(textfile) if textfile is not None else None,
        pushgateway=pushgateway,
        job=JOB,
        # one group per command and worker, so workers never overwrite each other
        grouping={"product": product, "command": command, "worker": worker.replace("/", "-of-")},
        extra=[key_state],
    )


@contextmanager
def published(publisher: metrics.Publisher) -> Iterator[metrics.Publisher]:
    """Publish once more when the block ends, however it ends."""
    try:
        yield publisher
    finally:
        publisher.publish()

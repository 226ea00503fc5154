"""The operator CLI, ``field-encrypt`` (and ``encrypt-migrate``).

It imports the library and never the reverse: everything it does is a call into
``field_encrypt.rotation`` or a provider, plus output. typer builds the commands from
type hints (so the flags, their help and ``docs/cli.md`` stay close to the code); rich
draws the progress bar and tables on a terminal; output.JsonLines writes one JSON object per
line when the output is not a terminal (or with ``--json``), for log shippers.
"""

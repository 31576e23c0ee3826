"""`vaebench` command line: the app, one command per module of `bench.commands`; no logic lives here."""

from __future__ import annotations

import sys

import typer

from bench.commands import bench, check, data, export, gaps, report, run

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark VAE posteriors and priors: train grids, record nats and speed, report.")
for name, module in (("run", run), ("report", report), ("gaps", gaps), ("data", data), ("check", check),
                     ("bench", bench)):
    app.command(name)(module.command)
for name, group in (("export", export.app),):  # commands with subcommands
    app.add_typer(group, name=name)


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()

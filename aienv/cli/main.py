"""``aienv`` commands. Every command but ``serve`` talks to the node's API.

The commands live by subject (``workspaces``, ``network``, ``clone``,
``runtimes``, ``system``, ``capture``, ``auth``, ``serve``); this module makes
the app, registers them in the order ``aienv --help`` lists them, and turns
errors into one red line and an exit code.

A command imports what it uses when it runs (rich's progress bars, the node's
own modules for ``serve``): ``aienv list`` should answer in well under 150 ms,
and most of a CLI's time is its imports (``scripts/bench cli`` measures it).
The modules that define commands do without ``from __future__ import
annotations``: typer would compile and evaluate every annotation string of
every command on each run (~15 ms).
"""

import sys
from typing import Annotated

import typer

from aienv import __version__
from aienv.cli import (
    clone,
    coercion,
    group,
    network,
    runtimes,
    serve,
    setup,
    shell,
    system,
    versions,
    workspaces,
)
from aienv.cli.auth import auth_app
from aienv.cli.capture import capture
from aienv.cli.client import CliError
from aienv.cli.render import err, out
from aienv.cli.variables import env_app
from aienv.errors import AienvError

coercion.install()

app = typer.Typer(
    help="Share, discover, clone and launch AI development environments on your LAN.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        out.line(f"aienv {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


for name, command in (
    ("serve", serve.serve),
    ("node", network.node_info),
    ("create", workspaces.create),
    ("list", workspaces.list_cmd),
    ("show", workspaces.show),
    ("delete", workspaces.delete),
    ("share", workspaces.share),
    ("unshare", workspaces.unshare),
    ("history", versions.history),
    ("diff", versions.diff),
    ("update", versions.update),
    ("rollback", versions.rollback),
    ("setup", setup.setup),
    ("peers", network.peers),
    ("clone", clone.clone),
    ("clones", clone.clones),
    ("system", system.system),
    ("plan", runtimes.plan),
    ("launch", runtimes.launch),
    ("ps", runtimes.ps),
    ("stop", runtimes.stop),
    ("logs", runtimes.logs),
    ("shell", shell.shell),
    ("pair", group.pair),
    ("unpair", group.unpair),
    ("group", group.group),
    ("move", group.move),
    ("events", system.events),
    ("capture", capture),
):
    app.command(name)(command)
app.add_typer(network.peer_app, name="peer")
app.add_typer(runtimes.snapshot_app, name="snapshot")
app.add_typer(auth_app, name="auth")
app.add_typer(env_app, name="env")


def main() -> None:
    try:
        app()
    except CliError as exc:
        err.print(f"[red]aienv: {exc.message}[/]", highlight=False)
        sys.exit(exc.exit_code)
    except AienvError as exc:  # raised by `serve` itself: settings, interfaces, ports
        err.print(f"[red]aienv: {exc.message}[/]", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # never a traceback for a person; the node log has details
        err.print(f"[red]aienv: unexpected error: {exc}[/]", highlight=False)
        sys.exit(1)

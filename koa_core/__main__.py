"""`python -m koa_core` runs the `koa` command."""

from koa_core.cli.app import main

main()

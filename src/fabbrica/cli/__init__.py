"""The `fabbrica` command line (Typer + Rich)."""

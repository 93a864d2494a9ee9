"""The deepspec command line: a thin typer layer over deepspec_core."""

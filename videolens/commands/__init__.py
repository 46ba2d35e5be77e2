"""CLI subcommands (see ``videolens.cli``)."""

"""``python -m ebm`` runs the CLI (the scheduler starts jobs this way)."""

from ebm.cli import app

app()

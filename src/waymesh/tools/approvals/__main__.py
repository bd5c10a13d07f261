"""`python -m waymesh.tools.approvals`, for use before or without the main `waymesh` command."""

from .cli import app

app(prog_name="waymesh approvals")

"""`waymesh approvals`: who approves whose pull requests, as a table, JSON, CSV or chord diagram.

Data flows in one direction: sources (GitHub JSON, git history) -> SQLite -> one SQL query ->
approval pairs -> outputs. Each step lives in its own module.
"""

"""Alembic migrations of the job store, shipped inside the package.

`HEAD` names the newest revision so that a start-up on an up-to-date store
can skip importing Alembic (a third of a second of every `pravah run`); a
test checks it against Alembic's own view of the scripts, so it cannot drift.
"""

HEAD = "0010"

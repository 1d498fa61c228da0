"""The app's routes, one router per feature (FastAPI's "Bigger Applications" shape).

READ routers only answer GETs (the page, runs, reports, result pictures, progress streams); CHANGE routers
take uploads or start runs. app.py includes both; a check that state-changing requests come from the page
itself (Origin, a token) is one dependency added to the CHANGE routers there.
"""

from __future__ import annotations

from . import pages, predict, stylize, train

READ = (pages.router, train.progress)
CHANGE = (predict.router, stylize.router, train.router)

__all__ = ["READ", "CHANGE"]

"""The board's Voilà: Voilà itself plus one redirect, `<base_url without slash>` -> `<base_url>`.

JupyterHub's proxy sends `/services/status` (no slash) to the service as well as everything
under `/services/status/`, and Voilà serves only the latter: the bare path answered 404. The
hub never sees that request, so the redirect lives here. Run as `python -m labs.board_voila`
with Voilà's own options (`labs.board.board_command`)."""

from __future__ import annotations

import re

import tornado.web
from voila.app import Voila


class BoardVoila(Voila):
    def init_handlers(self) -> list:
        handlers = super().init_handlers()
        bare = self.base_url.rstrip("/")
        if bare:  # RedirectHandler keeps the query string (?lang=ru)
            handlers.insert(
                0,
                (
                    re.escape(bare),
                    tornado.web.RedirectHandler,
                    {"url": self.base_url, "permanent": False},
                ),
            )
        return handlers


main = BoardVoila.launch_instance

if __name__ == "__main__":
    main()

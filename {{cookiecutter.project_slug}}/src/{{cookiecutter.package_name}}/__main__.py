"""`python -m <package>`: validate the settings, then serve with uvicorn."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from .settings import Settings, describe_validation_error


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as error:
        print(describe_validation_error(error), file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        f"{__package__}.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        workers=settings.web_concurrency,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

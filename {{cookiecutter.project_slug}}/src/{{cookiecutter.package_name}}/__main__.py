"""`python -m <package>`: validate the settings, then serve with uvicorn."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from .logging_config import log_config
from .metrics import process_group_directory
from .settings import Settings, describe_validation_error


def main() -> int:
    try:
        settings = Settings()
    except ValidationError as error:
        print(describe_validation_error(error), file=sys.stderr)
        return 2
    # uvicorn applies log_config in each worker too; the workers find the metrics directory
    # in the environment they are spawned with.
    with process_group_directory(settings.web_concurrency):
        uvicorn.run(
            f"{__package__}.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            log_config=log_config(settings),
            workers=settings.web_concurrency,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

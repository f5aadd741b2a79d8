"""``python -m query_api``: serve the query API with settings from ``RUNSTREAM_*``."""

from query_api.app import main
from runstream.settings import Settings

if __name__ == "__main__":
    main(Settings.from_env())

"""``python -m query_api``: serve the query API with settings from ``RUNSTREAM_*``."""

from runstream.query_api.app import main
from runstream.settings import ServiceSettings

if __name__ == "__main__":
    main(ServiceSettings.from_env())

"""Every limit of runstream, in one place.

The SDK checks these at call time (so the error points at the user's line), and the
gateway and processors enforce them again through the event schemas. Azure ML's limits
are the floor; these are the ceilings we commit to.
"""

MAX_NAME_LENGTH = 255
"""Characters in a metric, table, image, experiment or run name."""

MAX_TAG_KEY_LENGTH = 255
"""Characters in a tag key."""

MAX_STRING_VALUE_LENGTH = 4096
"""Characters in a string metric value, table cell or tag value."""

MAX_METRIC_NAMES_PER_RUN = 10_000
"""Distinct metric/table/image names one run may log (Azure ML: 50)."""

MAX_VALUES_PER_METRIC = 100_000_000
"""Values one metric name may hold in one run (Azure ML: 1M)."""

MAX_COLUMNS_PER_ROW = 1_000
"""Columns in one `log_row` call or `log_table` (Azure ML: 15)."""

MAX_POINTS_PER_EVENT = 10_000
"""Points (or list values) carried by one event; the SDK splits longer batches."""

MAX_ROWS_PER_EVENT = 10_000
"""Table rows carried by one event; the SDK splits longer tables."""

MAX_LOG_LINES_PER_EVENT = 10_000
"""Captured output lines carried by one event."""

MAX_PROPERTIES = 1_000
"""Properties given to `start_logging(**props)`."""

MAX_EVENT_BYTES = 1_000_000
"""Encoded size of one event; Kafka's default `max.message.bytes` is about 1 MB."""

MAX_EVENTS_PER_REQUEST = 10_000
"""Events in one POST to the ingest gateway."""

MAX_REQUEST_BYTES = 64 * 1024 * 1024
"""Body size of one POST to the ingest gateway."""

MAX_ARTIFACT_PATH_LENGTH = 1024
"""Characters in an artifact's name (its path inside the run)."""

MAX_ARTIFACT_BYTES = 4 * 1024 * 1024 * 1024
"""Size of one uploaded file."""

MAX_LOG_LINE_LENGTH = 16_384
"""Characters in one captured output line; longer lines are split by the SDK."""

MAX_SNAPSHOT_BYTES = 300 * 1024 * 1024
"""Total size of the files a submitted `source_directory` snapshots (after `.runstreamignore`
or `.gitignore`); Azure ML's limit is 300 MB too. Past it `submit` raises, naming the largest files."""

MAX_SNAPSHOT_FILES = 2_000
"""Files in one snapshot of a submitted `source_directory` (Azure ML: 2,000)."""

MAX_IMAGE_BYTES = 100 * 1024 * 1024
"""Size of one image given to `log_image` (a file, or a figure once rendered to PNG)."""

MAX_PARAM_KEY_LENGTH = 250
"""Characters in a parameter's key (MLflow's limit)."""

MAX_PARAM_VALUE_LENGTH = 6000
"""Characters in a parameter's value (MLflow's limit)."""

MAX_PARAMS_PER_EVENT = 1_000
"""Parameters carried by one ``params.logged`` event."""

"""Names vulture cannot see used: the SDK's public API (used by users' scripts, not by our
code), callbacks called by libraries, and fields read by name. Vulture only parses this file.

Add a name here only when it is used from outside our code; anything else vulture finds
is dead and goes (code used only by tests belongs in tests/support).
"""
# ruff: noqa: F821

# The SDK's public API (Azure ML's Run/Experiment/Workspace shape; see SPEC.md).
_.from_config
_.get_runs
_.log_list
_.log_row
_.log_table
_.log_image
_.remove_tag
_.get_tags
_.upload_folder
_.download_file
_.child_run
_.get_run  # Workspace.get_run (Azure ML)
_.show  # widgets: RunDetails(run).show()
wait_post_processing  # Run.wait_for_completion's Azure ML signature, accepted and ignored
user_managed_dependencies  # Environment.python.user_managed_dependencies (Azure ML)
_.user_managed_dependencies

# Called by libraries.
_.on_partitions_revoked  # aiokafka ConsumerRebalanceListener
_.on_partitions_assigned
revoked
frame  # signal handler signature
_.compress_type  # zipfile.ZipInfo fields
_.external_attr

# processors.runner.Stats counters, read by name by processors.metrics.
batches
new_events
dead_letters
write_seconds
_.batches
_.new_events
_.dead_letters
_.write_seconds

# Read only by tests/test_compose.py; left while another change splits runstream.settings.
_.env_names

# Run's parameters, the SDK's public API (issue 12): called by users' scripts.
_.log_params
_.get_params

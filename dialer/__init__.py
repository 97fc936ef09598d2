"""Queue, dispatch, caps, calling windows, call log, audit, storage and scheduled jobs."""

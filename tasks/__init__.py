"""The eight signal-to-order steps: plain functions over validated frames (see
`tasks.pipeline.STEPS`), each wrapped by a thin Prefect task in `tasks.prefect_tasks`."""

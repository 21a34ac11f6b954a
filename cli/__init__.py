"""The user's entry points, above `flows/`: the `pidistill` command (`cli.main`), `pidistill serve`
(`cli.serve`), and the processes and environment they manage (`cli.processes`, `cli.env`)."""

"""The `refreshq` subcommands beyond the processes: refresh tasks, data, the upstream, the demo."""

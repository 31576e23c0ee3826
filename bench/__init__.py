"""vaebench's harness: CLI, grid files, the training loop, the runner, storage and reports."""

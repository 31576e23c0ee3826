"""Grid files to frozen run configs: the config dataclasses (`config`), TOML grid files (`files`), and how the
runs to do are stacked (`stacks`)."""

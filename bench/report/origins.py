"""Where the report's families came from: one header line naming the families that are not built-in (plugins by
their distribution and version, dotted paths by themselves), from the rows' `posterior_origin`/`prior_origin`."""

from __future__ import annotations

import pandas as pd


def origin_lines(runs: pd.DataFrame) -> list[str]:
    """['- Families from plugins: radial (posterior, vaebench-radial==0.1.0)'], or [] when every family is built-in
    (or the rows predate the origin columns)."""
    found = []
    for kind in ("posterior", "prior"):
        column = f"{kind}_origin"
        if column not in runs:
            continue
        pairs = runs.loc[runs[column].fillna("builtin") != "builtin", [kind, column]].drop_duplicates()
        found += [f"{name} ({kind}, {origin})" for name, origin in pairs.itertuples(index=False)]
    return [f"- Families from plugins: {', '.join(sorted(found))}."] if found else []

"""`make gpu-check`: the phases run on a CUDA machine (`check`) and the report they make (`report`)."""

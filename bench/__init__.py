"""The gateway's benchmark (issue 6): ``python -m bench.run`` (``make bench``)."""

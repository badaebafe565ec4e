"""Report helpers: matplotlib figures (object-oriented Agg API, no pyplot) for the benchmark report."""

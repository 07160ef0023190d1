"""Report: the tidy results table, statistics, the paper's tables and plots, provenance."""

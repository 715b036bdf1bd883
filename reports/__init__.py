"""Reports: statistics, tables and plots, all pure functions of the tidy results table."""

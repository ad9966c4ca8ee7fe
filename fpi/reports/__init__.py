"""Numbers read from records only, never the model: counts, statistics, the failure report and the regression gate."""

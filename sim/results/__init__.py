"""From records to numbers: the requests table, SLO attainment, cost rates, the summary. No SimPy."""

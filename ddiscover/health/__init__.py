"""Health of backends: the pure rise/fall record and the checker that drives it."""

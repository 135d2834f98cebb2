"""Running it in production: number set-up, warm checks, metrics, error reports, dashboard."""

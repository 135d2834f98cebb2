"""Tests of running it: deploy files, number set-up, metrics, error reports, drain."""

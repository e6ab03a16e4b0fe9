"""Tests of the proxy modes."""
